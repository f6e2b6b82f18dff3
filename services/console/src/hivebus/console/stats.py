"""The `hivebus stats` scorecard, computed from decoded events alone (no I/O here).

Feed a `Tally` (`hivebus.console.stats_tally`) every decoded event dict, then ask `scorecard`
for the rows of a window (and of an earlier one beside it, to flag what moved).

What the numbers mean:

- A *sub-task* is one attempt that ended: one `SubTaskFinished` (there is one per attempt).
  It belongs to the window that holds its `SubTaskFinished.ts` (half-open, `[start, end)`),
  and to the row of its `role`, `subtask_kind` or `model` (`None` when the event has none).
- completion rate: sub-tasks `completed` / sub-tasks.
- steps p50/p95 and mean: `SubTaskFinished.usage.steps`; percentiles are nearest-rank (the
  smallest value with at least p% of the values at or below it), so they are real values.
- latency p50/p95: from the earliest `SubTaskStarted` of the same attempt (the first run's
  pick-up; the time a paused run waited for people is included) to its `SubTaskFinished`.
  `SubTaskAssigned` is on WORK, not EVENTS, so dispatch time is not known here; a sub-task
  whose start was not read is left out of the latency figures only.
- tokens and cost per sub-task: mean of `usage.input_tokens + usage.output_tokens` and of
  `usage.cost_usd`.
- tool error rate: failed tool steps / tool steps, over the `StepRecorded` of `step_kind`
  `tool` of the sub-tasks in the row (a step with an `error` failed; one per run and step).
- limit-exceeded rate: sub-tasks whose `SubTaskFinished.limit` is set / sub-tasks.
- escalation rate: sub-tasks with at least one `ApprovalRequested` / sub-tasks.
- DLQ: `DeadLetter` entries (they are on the DLQ stream, not EVENTS) whose `ts` is in the
  window, in the row of the assignment they carry (`original`, or `original.body` for an
  unrecoverable one); `Scorecard.dlq` counts every entry of the window, attributed or not.

A rate over nothing is `None`, not 0.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from hivebus.console.stats_tally import Attempt, Run, Tally

DURATION_UNITS = {"m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d{1,6})([mhd])")
EPSILON = 1e-9
"""Float noise ignored when a change is compared with its threshold ("more than")."""


def parse_duration(text: str) -> timedelta:
    """`30m`, `24h`, `7d` (a positive whole number and m, h or d) as a timedelta.

    Raises:
        ValueError: anything else, saying what is accepted.
    """
    found = _DURATION.fullmatch(text.strip().lower())
    if found is None or int(found[1]) == 0:
        raise ValueError(f"{text!r} is not a duration: use a number and m, h or d (30m, 24h, 7d)")
    return timedelta(seconds=int(found[1]) * DURATION_UNITS[found[2]])


class By(StrEnum):
    """What one row of the scorecard groups."""

    ROLE = "role"
    KIND = "kind"
    MODEL = "model"


@dataclass(frozen=True)
class Window:
    """A half-open span of event time, `[start, end)`."""

    start: datetime
    end: datetime

    def holds(self, ts: float) -> bool:
        """Whether an epoch-seconds time falls in the window."""
        return self.start.timestamp() <= ts < self.end.timestamp()


@dataclass(frozen=True)
class Thresholds:
    """How far a row may move against the earlier window before it is flagged."""

    rate: float = 0.10
    """Completion rate, absolute (0.10: ten points)."""
    steps: float = 0.25
    """Mean steps, relative to the earlier window (0.25: a quarter)."""


_BY_INDEX = {By.ROLE: 0, By.KIND: 1, By.MODEL: 2}


def percentile(values: list[float], p: int) -> float | None:
    """Nearest-rank percentile of `values` (None for none)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, (p * len(ordered) + 99) // 100 - 1)]


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class Stats:
    """The numbers of one row in one window (see the module docstring)."""

    subtasks: int
    completed: int
    completion_rate: float | None
    steps_mean: float | None
    steps_p50: float | None
    steps_p95: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    tokens_per_subtask: float | None
    cost_per_subtask_usd: float | None
    tool_steps: int
    tool_errors: int
    tool_error_rate: float | None
    limit_exceeded: int
    limit_exceeded_rate: float | None
    escalated: int
    escalation_rate: float | None
    dlq: int


def _stats(tally: Tally, runs: list[tuple[Attempt, Run]], dlq: int) -> Stats:
    n = len(runs)
    steps = [float(run.steps) for _, run in runs]
    latencies = [max(0.0, run.ts - tally.started[key]) for key, run in runs if key in tally.started]
    tool_steps = tool_errors = 0
    for key, _ in runs:
        calls = tally.tools.get(key)
        if calls:
            tool_steps += len(calls)
            tool_errors += sum(calls.values())
    completed = sum(run.completed for _, run in runs)
    limited = sum(run.limited for _, run in runs)
    escalated = sum(key in tally.escalated for key, _ in runs)
    return Stats(
        subtasks=n,
        completed=completed,
        completion_rate=_rate(completed, n),
        steps_mean=_mean(steps),
        steps_p50=percentile(steps, 50),
        steps_p95=percentile(steps, 95),
        latency_p50_s=percentile(latencies, 50),
        latency_p95_s=percentile(latencies, 95),
        tokens_per_subtask=_mean([float(run.tokens) for _, run in runs]),
        cost_per_subtask_usd=_mean([run.cost for _, run in runs]),
        tool_steps=tool_steps,
        tool_errors=tool_errors,
        tool_error_rate=_rate(tool_errors, tool_steps),
        limit_exceeded=limited,
        limit_exceeded_rate=_rate(limited, n),
        escalated=escalated,
        escalation_rate=_rate(escalated, n),
        dlq=dlq,
    )


def _rows(tally: Tally, by: By, window: Window) -> dict[str | None, Stats]:
    index = _BY_INDEX[by]
    runs: dict[str | None, list[tuple[Attempt, Run]]] = defaultdict(list)
    for key, run in tally.runs.items():
        if window.holds(run.ts):
            runs[run.keys[index]].append((key, run))
    dead: dict[str | None, int] = defaultdict(int)
    for letter in tally.dead:
        if window.holds(letter.ts) and letter.keys[0] is not None:  # attributed: has a role
            dead[letter.keys[index]] += 1
    return {row: _stats(tally, runs.get(row, []), dead.get(row, 0)) for row in {*runs, *dead}}


def flags_of(now: Stats, before: Stats | None, thresholds: Thresholds) -> tuple[str, ...]:
    """`completion_rate` and/or `steps` when that figure moved beyond its threshold."""
    if before is None or not before.subtasks or not now.subtasks:
        return ()
    flags: list[str] = []
    if abs((now.completion_rate or 0.0) - (before.completion_rate or 0.0)) > (
        thresholds.rate + EPSILON
    ):
        flags.append("completion_rate")
    was, mean = before.steps_mean or 0.0, now.steps_mean or 0.0
    moved = abs(mean - was) / was if was else (math.inf if mean else 0.0)
    if moved > thresholds.steps + EPSILON:
        flags.append("steps")
    return tuple(flags)


@dataclass(frozen=True)
class Row:
    """One row: its key, the window's numbers, the earlier window's (with `--compare`)."""

    key: str | None
    now: Stats
    before: Stats | None
    flags: tuple[str, ...]


@dataclass(frozen=True)
class Scorecard:
    """Every row of one window, grouped `by`, optionally beside an earlier window."""

    by: By
    window: Window
    baseline: Window | None
    thresholds: Thresholds
    rows: list[Row]
    dlq: int
    """Every DLQ entry of the window, attributed to a row or not."""
    events: int


def scorecard(
    tally: Tally,
    by: By,
    window: Window,
    baseline: Window | None = None,
    thresholds: Thresholds | None = None,
) -> Scorecard:
    """The rows of `window` (and of `baseline` beside them), sorted by key, `None` last."""
    thresholds = thresholds or Thresholds()
    now = _rows(tally, by, window)
    before = _rows(tally, by, baseline) if baseline is not None else {}
    empty = _stats(tally, [], 0)
    rows = [
        Row(
            key,
            now.get(key, empty),
            before.get(key, empty) if baseline is not None else None,
            flags_of(now.get(key, empty), before.get(key), thresholds),
        )
        for key in sorted({*now, *before}, key=lambda k: (k is None, k or ""))
    ]
    dlq = sum(window.holds(letter.ts) for letter in tally.dead)
    return Scorecard(by, window, baseline, thresholds, rows, dlq, tally.events)


_ROUNDING = {"cost_per_subtask_usd": 6, "latency_p50_s": 3, "latency_p95_s": 3}


def stats_json(stats: Stats) -> dict[str, Any]:
    """One `Stats` as JSON: rates and means to 4 places, latency to 3, cost to 6."""
    return {
        name: round(value, _ROUNDING.get(name, 4)) if isinstance(value, float) else value
        for name, value in asdict(stats).items()
    }


def scorecard_json(card: Scorecard) -> dict[str, Any]:
    """The scorecard as the `--json` object (its keys are listed in `stats_command`)."""

    def span(window: Window | None) -> dict[str, str] | None:
        if window is None:
            return None
        return {"start": window.start.isoformat(), "end": window.end.isoformat()}

    compared = card.baseline is not None
    return {
        "by": card.by.value,
        "window": span(card.window),
        "baseline": span(card.baseline),
        "thresholds": asdict(card.thresholds) if compared else None,
        "events": card.events,
        "dlq": card.dlq,
        "rows": [
            {
                "key": row.key,
                **stats_json(row.now),
                "baseline": stats_json(row.before) if row.before is not None else None,
                "flags": list(row.flags),
            }
            for row in card.rows
        ],
    }
