"""What `hivebus stats` keeps of every event it reads: a few fields, never the event whole.

`Tally.add` takes one decoded event dict (`json.loads` of a message body; no model is built
per event) and picks what the scorecard (`hivebus.console.stats`) needs:

- `subtask_finished`: one `Run` per attempt (the first one read wins): its `ts`, row keys
  (`role`, `subtask_kind`, `model`), status, `usage.steps`, tokens, cost, whether `limit` is set;
- `subtask_started`: the earliest `ts` of each attempt (where its latency starts);
- `step` of `step_kind` `tool`: failed or not, by run and step (a repeat counts once);
- `approval_requested`: the attempts that asked for at least one approval;
- `dead_letter` (DLQ stream): its `ts` and the row keys of the assignment it carries.

Every other kind is counted in `events` and otherwise ignored; an event missing a field that
is read is counted in `skipped`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Attempt = tuple[str, str, int]
"""A sub-task attempt: task id, sub-task id, attempt."""


@dataclass(frozen=True, slots=True)
class Run:
    """One attempt that ended, as the scorecard needs it."""

    ts: float
    keys: tuple[str | None, str | None, str | None]  # role, kind, model: indexed by By
    completed: bool
    steps: int
    tokens: int
    cost: float
    limited: bool


@dataclass(frozen=True, slots=True)
class DeadEntry:
    """One dead letter: when, and the row keys of its assignment (None when it has none)."""

    ts: float
    keys: tuple[str | None, str | None, str | None]


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def _dispatch_of(original: Any) -> dict[str, Any] | None:
    """The assignment a dead letter carries, if it carries one."""
    if isinstance(original, dict) and isinstance(original.get("body"), dict):
        original = original["body"]
    if isinstance(original, dict) and isinstance(original.get("role"), str):
        return original
    return None


@dataclass
class Tally:
    """What the scorecard needs of every event read, kept small (no event is kept whole)."""

    events: int = 0
    """Events read: added, or passed over undecoded."""
    skipped: int = 0
    """Events missing a field the scorecard reads (left out)."""
    runs: dict[Attempt, Run] = field(default_factory=dict)
    started: dict[Attempt, float] = field(default_factory=dict)
    tools: dict[Attempt, dict[tuple[str, int], bool]] = field(default_factory=dict)
    escalated: set[Attempt] = field(default_factory=set)
    dead: list[DeadEntry] = field(default_factory=list)

    def add(self, event: dict[str, Any]) -> None:
        """Count one decoded event (EVENTS or DLQ); other kinds are ignored."""
        self.events += 1
        try:
            self._add(event)
        except (KeyError, TypeError, ValueError, AttributeError):
            self.skipped += 1

    def pass_over(self) -> None:
        """Count one message read but not decoded: a kind the scorecard does not use."""
        self.events += 1

    def add_json(self, body: bytes) -> None:
        """Decode one message body and count it; a body that is not JSON is skipped."""
        try:
            event = json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            self.events += 1
            self.skipped += 1
            return
        self.add(event)

    def _add(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "step":
            if event["step_kind"] == "tool":
                key = (event["task_id"], event["subtask_id"], event["attempt"])
                steps = self.tools.setdefault(key, {})
                steps[event["run_id"], event["step"]] = bool(event.get("error"))
        elif kind == "subtask_started":
            key = (event["task_id"], event["subtask_id"], event["attempt"])
            ts = _epoch(event["ts"])
            if ts < self.started.get(key, math.inf):
                self.started[key] = ts
        elif kind == "subtask_finished":
            key = (event["task_id"], event["subtask_id"], event["attempt"])
            if key not in self.runs:  # one per attempt: a repeat changes nothing
                usage = event.get("usage") or {}
                self.runs[key] = Run(
                    ts=_epoch(event["ts"]),
                    keys=(event["role"], event.get("subtask_kind"), event.get("model")),
                    completed=event["status"] == "completed",
                    steps=int(usage.get("steps", 0)),
                    tokens=int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0)),
                    cost=float(usage.get("cost_usd", 0.0)),
                    limited=event.get("limit") is not None,
                )
        elif kind == "approval_requested":
            self.escalated.add((event["task_id"], event["subtask_id"], event["attempt"]))
        elif kind == "dead_letter":
            dispatch = _dispatch_of(event.get("original")) or {}
            keys = (dispatch.get("role"), dispatch.get("subtask_kind"), dispatch.get("model"))
            self.dead.append(DeadEntry(_epoch(event["ts"]), keys))
