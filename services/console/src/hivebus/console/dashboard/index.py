"""The tasks list, in memory: one small row per task, rebuilt from the streams and kept live.

Fed (by `feed`) with every submission on TASKS and the few event kinds that move a row
(a sub-task started, paused, resumed or finished; a task finished or rejected), as decoded
JSON. Pure: no I/O here, so paging and counting are tested without a server.

Rows are ordered by the submission's TASKS sequence, newest first; a page's cursor is the
sequence of its last row, so tasks submitted while a person pages do not shift the pages.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hivebus.contracts import SubTaskStatus, TaskStatus

REJECTED = "rejected"
"""The status of a submission the orchestrator refused (it never became a task)."""

RUNNING_FILTER = "running"
"""The filter that matches every task not ended yet (submitted, planning or running)."""

NOT_ENDED = frozenset({TaskStatus.SUBMITTED.value, TaskStatus.PLANNING.value, "running"})

STATUS_FILTERS: tuple[str, ...] = (*(s.value for s in TaskStatus), REJECTED)
"""Every value `status=` accepts."""

MAX_GOAL_CHARS = 500
"""A row carries the goal's beginning; the task's page has it whole."""

MAX_LIMIT = 500


class CursorError(ValueError):
    """A cursor that did not come from a page of this list."""


def parse_time(value: object) -> datetime | None:
    """An event's ISO-8601 `ts` as an aware UTC datetime, or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str | None:
    """`value` as ISO-8601 UTC text (None stays None)."""
    return None if value is None else value.astimezone(UTC).isoformat()


@dataclass
class TaskEntry:
    """What the list knows of one task."""

    task_id: str
    seq: int = 0
    """The submission's TASKS sequence (0 until the submission is read)."""
    goal: str = ""
    submitted_at: datetime | None = None
    status: str = TaskStatus.SUBMITTED.value
    reason: str = ""
    subtask_ids: list[str] = field(default_factory=list)
    states: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Sub-task id -> (attempt, status) as the events tell it."""
    usage: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Sub-task id -> (tokens, cost) of its latest finished run, while the task runs."""
    total: tuple[int, float] | None = None
    """(tokens, cost) of the whole task, from its `TaskFinished`."""
    finished_at: datetime | None = None
    errors: list[str] = field(default_factory=list)
    """A rejected submission's every problem."""

    def ended(self) -> bool:
        """Whether the task has its final status."""
        return self.status not in NOT_ENDED

    def counts(self) -> dict[str, int]:
        """How many sub-tasks are in each status (those nothing happened to yet: pending)."""
        counted = Counter(self.states[s][1] for s in self.subtask_ids if s in self.states)
        unseen = sum(1 for s in self.subtask_ids if s not in self.states)
        if unseen:
            counted[SubTaskStatus.PENDING.value] += unseen
        return dict(sorted(counted.items()))

    def row(self) -> dict[str, Any]:
        """The task as a TaskRow of the API."""
        tokens, cost = self.total or (
            sum(t for t, _ in self.usage.values()),
            sum(c for _, c in self.usage.values()),
        )
        duration = None
        if self.finished_at is not None and self.submitted_at is not None:
            duration = round(max((self.finished_at - self.submitted_at).total_seconds(), 0.0), 3)
        return {
            "task_id": self.task_id,
            "goal": self.goal,
            "status": self.status,
            "reason": self.reason,
            "counts": self.counts(),
            "subtasks": len(self.subtask_ids),
            "tokens": tokens,
            "cost_usd": round(cost, 6),
            "duration_s": duration,
            "submitted_at": iso(self.submitted_at),
            "finished_at": iso(self.finished_at),
        }


def _usage(event: dict[str, Any]) -> tuple[int, float]:
    usage = event.get("usage")
    if not isinstance(usage, dict):
        return 0, 0.0
    tokens = int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
    return tokens, float(usage.get("cost_usd") or 0.0)


class TaskIndex:
    """Every task's row, newest first, with the filter and paging of `GET /api/tasks`."""

    def __init__(self) -> None:
        """Start empty."""
        self.entries: dict[str, TaskEntry] = {}
        self._order: list[str] = []
        """Task ids by submission sequence, oldest first (the streams deliver in order)."""

    def _entry(self, task_id: str) -> TaskEntry:
        entry = self.entries.get(task_id)
        if entry is None:
            entry = self.entries[task_id] = TaskEntry(task_id)
        return entry

    def add_submission(
        self, seq: int, body: Any, msg_id: str | None, stored_at: datetime | None
    ) -> None:
        """A message on TASKS: the task's goal, sub-task ids and time (first one wins).

        A body that is not a mapping, or names no task, is the orchestrator's to reject; the
        row appears with what can be read (the `Nats-Msg-Id` names the task when the body
        does not).
        """
        data = body if isinstance(body, dict) else {}
        task_id = data.get("task_id") if isinstance(data.get("task_id"), str) else msg_id
        if not task_id:
            return
        entry = self._entry(task_id)
        if entry.seq:
            return  # a submission repeated after the dedup window: the same task
        entry.seq = seq
        self._order.append(task_id)
        goal = data.get("goal")
        entry.goal = goal[:MAX_GOAL_CHARS] if isinstance(goal, str) else ""
        entry.submitted_at = parse_time(data.get("ts")) or stored_at
        plan = data.get("plan")
        subtasks = plan.get("subtasks") if isinstance(plan, dict) else None
        if isinstance(subtasks, list):
            ids = [s.get("id") for s in subtasks if isinstance(s, dict)]
            entry.subtask_ids = [i for i in ids if isinstance(i, str)]

    def add_event(self, kind: str, event: dict[str, Any]) -> None:
        """One event that moves a row (see the module docstring); anything else is ignored."""
        task_id = event.get("task_id")
        if not isinstance(task_id, str):
            return
        entry = self._entry(task_id)
        if kind == "task_finished":
            self._finish(entry, event)
        elif kind == "task_rejected":
            errors = event.get("errors")
            entry.status = REJECTED
            entry.errors = [str(e) for e in errors] if isinstance(errors, list) else []
            entry.reason = "; ".join(entry.errors)
            entry.finished_at = parse_time(event.get("ts"))
        elif not entry.ended():
            self._subtask_event(entry, kind, event)

    def _subtask_event(self, entry: TaskEntry, kind: str, event: dict[str, Any]) -> None:
        subtask = event.get("subtask_id")
        if not isinstance(subtask, str):
            return
        attempt = int(event.get("attempt") or 1)
        status = {
            "subtask_started": SubTaskStatus.RUNNING.value,
            "approval_requested": SubTaskStatus.AWAITING_APPROVAL.value,
            "approval_resolved": SubTaskStatus.READY.value,
        }.get(kind)
        if kind == "subtask_finished":
            status = str(event.get("status") or SubTaskStatus.FAILED.value)
            entry.usage[subtask] = _usage(event)
        if status is None:
            return
        seen = entry.states.get(subtask)
        if seen is not None and seen[0] > attempt:
            return  # an older attempt's event, read late
        entry.states[subtask] = (attempt, status)
        entry.status = TaskStatus.RUNNING.value

    @staticmethod
    def _finish(entry: TaskEntry, event: dict[str, Any]) -> None:
        entry.status = str(event.get("status") or TaskStatus.FAILED.value)
        entry.reason = str(event.get("reason") or "")
        entry.finished_at = parse_time(event.get("ts"))
        entry.total = _usage(event)
        summaries = event.get("subtasks")
        listed: set[str] = set()
        for summary in summaries if isinstance(summaries, list) else []:
            if isinstance(summary, dict) and isinstance(summary.get("id"), str):
                listed.add(summary["id"])
                entry.states[summary["id"]] = (0, str(summary.get("status") or ""))
        if event.get("result_ref") and not listed.issuperset(entry.subtask_ids):
            # A result too large for a message lists only what did not complete (and the feed
            # could not read it whole): the rest completed.
            for subtask in entry.subtask_ids:
                if subtask not in listed:
                    entry.states[subtask] = (0, SubTaskStatus.COMPLETED.value)

    def page(
        self, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        """`GET /api/tasks`: rows newest first, at most `limit`, after `cursor`, and the total.

        Raises:
            CursorError: `cursor` is not the `next` of a page.
            ValueError: `status` or `limit` out of range (the message names it).
        """
        if status is not None and status not in STATUS_FILTERS:
            raise ValueError(f"status: {status!r} is not one of {', '.join(STATUS_FILTERS)}")
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit: {limit} is not between 1 and {MAX_LIMIT}")
        before = _cursor_seq(cursor) if cursor is not None else None

        def wanted(entry: TaskEntry) -> bool:
            if status is None:
                return True
            if status == RUNNING_FILTER:
                return not entry.ended()
            return entry.status == status

        rows: list[dict[str, Any]] = []
        total = 0
        last_seq: int | None = None
        more = False
        for task_id in reversed(self._order):
            entry = self.entries[task_id]
            if not wanted(entry):
                continue
            total += 1
            if before is not None and entry.seq >= before:
                continue
            if len(rows) < limit:
                rows.append(entry.row())
                last_seq = entry.seq
            else:
                more = True
        return {"tasks": rows, "next": f"s{last_seq}" if more else None, "total": total}


def _cursor_seq(cursor: str) -> int:
    if cursor.startswith("s") and cursor[1:].isdigit() and int(cursor[1:]) > 0:
        return int(cursor[1:])
    raise CursorError(f"cursor: {cursor!r} is not the `next` of a previous page")
