"""`hivebus stats`: the scorecard per role, sub-task kind or model, read from the bus itself.

Reading (`hivebus.console.stats_reader`): EVENTS and DLQ (where dead letters are), each from
a stream time up to its last sequence as of the start, through an ordered consumer; bodies
decoded with `json.loads`, only the fields the scorecard uses kept.

Windows are by the event's own `ts`, not by the stream's timestamp: `ts` says when the thing
happened, wherever the event was stored since (a restored or mirrored stream, recorded events
published again), and a test can plant last week's events, which stream timestamps (set by the
server on arrival) cannot. The read starts `LOOKBACK` (stream time) before the earliest window,
so the starts, steps and approval requests of a sub-task that ended just inside a window are
read too (an event stored long after its `ts` is still read; one stored before the read's start
is not, whatever its `ts`).

`--since 24h` is the window `[now - 24h, now)`; `--compare 7d` puts beside it the window of 7
days immediately before (`[now - 24h - 7d, now - 24h)`), and flags rows whose completion rate
moved by more than `--threshold-rate` (absolute) or whose mean steps moved by more than
`--threshold-steps` (relative to the earlier window).

`--json` prints one object with these keys (always present; absent values are null):
`by`; `window` and `baseline` (`{"start", "end"}`, ISO 8601 UTC; `baseline` null without
`--compare`); `thresholds` (`{"rate", "steps"}`, null without `--compare`); `events` (events
read); `dlq` (every DLQ entry of the window); `rows`, sorted by `key` (null last), each with
`key` (the role, kind or model; null when the events name none), `subtasks`, `completed`,
`completion_rate`, `steps_mean`, `steps_p50`, `steps_p95`, `latency_p50_s`, `latency_p95_s`,
`tokens_per_subtask`, `cost_per_subtask_usd`, `tool_steps`, `tool_errors`, `tool_error_rate`,
`limit_exceeded`, `limit_exceeded_rate`, `escalated`, `escalation_rate`, `dlq`, `baseline`
(the same numbers for the earlier window, or null) and `flags` (`completion_rate`, `steps`).
Exit code 0; 1 when the server or its streams cannot be read; 2 for a bad option.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hivebus.console.options import settings_from_env, url_or_exit
from hivebus.console.render import EXIT_ERROR, stderr_console
from hivebus.console.stats import (
    By,
    Scorecard,
    Stats,
    Thresholds,
    Window,
    parse_duration,
    scorecard,
    scorecard_json,
)
from hivebus.console.stats_reader import LOOKBACK, StatsReadError, collect

PIPED_WIDTH = 200
"""Width of the table when stdout is not a terminal."""
FLAG_LABELS = {"completion_rate": "done", "steps": "steps"}
"""How a flag reads in the table (the JSON says `completion_rate` and `steps`)."""


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pair(low: float | None, high: float | None, digits: int = 0) -> str:
    return "-" if low is None else f"{_num(low, digits)}/{_num(high, digits)}"


def _cells(stats: Stats, before: Stats | None, *, compared: bool) -> list[str]:
    done, mean = [_pct(stats.completion_rate)], [_num(stats.steps_mean)]
    if compared:
        done.append(_pct(before.completion_rate if before else None))
        mean.append(_num(before.steps_mean if before else None))
    return [
        str(stats.subtasks),
        *done,
        _pair(stats.steps_p50, stats.steps_p95),
        *mean,
        _pair(stats.latency_p50_s, stats.latency_p95_s, 1),
        _num(stats.tokens_per_subtask, 0),
        "-" if stats.cost_per_subtask_usd is None else f"${stats.cost_per_subtask_usd:.4f}",
        _pct(stats.tool_error_rate),
        _pct(stats.limit_exceeded_rate),
        _pct(stats.escalation_rate),
        str(stats.dlq),
    ]


def scorecard_table(card: Scorecard) -> Table:
    """The scorecard as a rich table; with a baseline, its values (`was`) and a flag column."""
    compared = card.baseline is not None
    was = ["was"] if compared else []
    head = [card.by.value, "sub-\ntasks", "done", *was, "steps\np50/p95", "steps\nmean", *was]
    head += ["latency s\np50/p95", "tokens", "cost", "tool\nerrors", "limit", "escal-\nated", "DLQ"]
    head += ["flag"] if compared else []
    span = f"{card.window.start:%Y-%m-%d %H:%M} to {card.window.end:%Y-%m-%d %H:%M} UTC"
    table = Table(
        title=f"hivebus stats by {card.by.value}, {span}",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for name in head:
        left = name in {card.by.value, "flag"}
        wide = len(" ".join(FLAG_LABELS.values())) if name == "flag" else None
        table.add_column(name, justify="left" if left else "right", no_wrap=True, min_width=wide)
    for row in card.rows:
        cells = [row.key or "-", *_cells(row.now, row.before, compared=compared)]
        if compared:
            cells.append(" ".join(f"[red]{FLAG_LABELS[flag]}[/]" for flag in row.flags))
        table.add_row(*cells)
    caption = f"mean steps, tokens and cost per sub-task; {card.events} events read"
    caption += f"; {card.dlq} DLQ entries in the window"
    if card.baseline is not None:
        caption += f"; was: from {card.baseline.start:%Y-%m-%d %H:%M} UTC"
    table.caption = caption
    return table


def _duration_or_exit(text: str, option: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from exc


def stats(
    *,
    since: Annotated[
        str, typer.Option("--since", help="Window: the last 30m, 1h, 24h, 7d (Nm, Nh, Nd).")
    ] = "24h",
    by: Annotated[By, typer.Option("--by", help="One row per role, kind or model.")] = By.ROLE,
    compare: Annotated[
        str | None,
        typer.Option("--compare", help="Compare with the window of this length just before."),
    ] = None,
    threshold_rate: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Flag a completion rate moved by more than this."),
    ] = Thresholds.rate,
    threshold_steps: Annotated[
        float,
        typer.Option(min=0.0, help="Flag mean steps moved by more than this fraction."),
    ] = Thresholds.steps,
    json_out: Annotated[bool, typer.Option("--json", help="Print the scorecard as JSON.")] = False,
) -> None:
    """Scorecard from the EVENTS stream: completion, steps, latency, cost, errors, escalations."""
    length = _duration_or_exit(since, "--since")
    earlier = _duration_or_exit(compare, "--compare") if compare is not None else None
    settings = settings_from_env()
    url = url_or_exit(settings)
    now = datetime.now(UTC)
    window = Window(now - length, now)
    baseline = Window(window.start - earlier, window.start) if earlier is not None else None
    try:
        tally = asyncio.run(collect(url, (baseline or window).start - LOOKBACK, settings))
    except StatsReadError as exc:
        stderr_console().print(f"[red]stats:[/] {escape(str(exc))}")
        raise typer.Exit(EXIT_ERROR) from exc
    card = scorecard(tally, by, window, baseline, Thresholds(threshold_rate, threshold_steps))
    if json_out:
        typer.echo(json.dumps(scorecard_json(card), sort_keys=False))
    else:
        out = Console()
        # Piped, rich would fold the table to 80 columns; a log or a file reads better whole.
        (out if out.is_terminal else Console(width=PIPED_WIDTH)).print(scorecard_table(card))
