"""The scheduler's state changes, as pure functions from the current value to the next.

Each function returns a *change* for `StateStore.update_*`: given the value now (None when the
key is absent) it returns the new value, or None to leave it. Changes may run several times
(compare-and-set retries a lost race), so they only compute; every status move goes through
the transition table. A change that finds the work already done returns None: that is what
makes a redelivered event harmless.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from hivebus.contracts import (
    SUBTASK_TERMINAL,
    SubTaskFinished,
    SubTaskState,
    SubTaskStatus,
    TaskMeta,
    TaskStatus,
    transition,
)
from hivebus.contracts.state import set_bits

S = SubTaskStatus
SubTaskChange = Callable[[SubTaskState | None], SubTaskState | None]
MetaChange = Callable[[TaskMeta | None], TaskMeta | None]

_WAY_TO_RUNNING = (S.READY, S.DISPATCHED, S.RUNNING)
_NOT_STARTED = frozenset({S.PENDING, S.READY, S.DISPATCHED})


def advance(current: SubTaskStatus, target: SubTaskStatus) -> SubTaskStatus:
    """Move to `target`, first through the steps a fast agent's event may have overtaken.

    A result can arrive before the scheduler recorded `dispatched` (the publish was acked
    but the orchestrator crashed, or the agent was quicker) or before `started` was applied;
    each intermediate move still goes through the transition table.
    """
    if current in _WAY_TO_RUNNING:
        for step in _WAY_TO_RUNNING[_WAY_TO_RUNNING.index(current) + 1 :]:
            if target == step:
                break
            current = transition(current, step)
    return transition(current, target)


def create_pending(subtask_id: str, role: str) -> SubTaskChange:
    """Create a pending sub-task unless one exists."""
    return lambda cur: SubTaskState(id=subtask_id, role=role) if cur is None else None


def start_task(task_id: str, total: int, now: datetime) -> MetaChange:
    """Create the task's meta, `running` (an explicit plan needs no planning), unless it exists."""

    def start(cur: TaskMeta | None) -> TaskMeta | None:
        if cur is not None:
            return None
        status = transition(
            transition(TaskStatus.SUBMITTED, TaskStatus.PLANNING), TaskStatus.RUNNING
        )
        return TaskMeta(task_id=task_id, status=status, total=total, submitted_at=now)

    return start


def make_ready(needed: int) -> SubTaskChange:
    """`pending -> ready` once `needed` dependencies completed."""

    def ready(cur: SubTaskState | None) -> SubTaskState | None:
        if cur is None or cur.status != S.PENDING or cur.deps_done < needed:
            return None
        return cur.model_copy(update={"status": transition(cur.status, S.READY)})

    return ready


def mark_dispatched(cur: SubTaskState | None) -> SubTaskState | None:
    """`ready -> dispatched` (the assignment is on the bus)."""
    if cur is None or cur.status != S.READY:
        return None
    return cur.model_copy(update={"status": transition(cur.status, S.DISPATCHED)})


def mark_running(attempt: int, run_id: str) -> SubTaskChange:
    """`dispatched -> running` for this attempt (ignored if stale or already further)."""

    def run(cur: SubTaskState | None) -> SubTaskState | None:
        if cur is None or cur.attempt != attempt or cur.status not in {S.READY, S.DISPATCHED}:
            return None
        return cur.model_copy(update={"status": advance(cur.status, S.RUNNING), "run_id": run_id})

    return run


def apply_result(event: SubTaskFinished) -> SubTaskChange:
    """The run's terminal status, reason, output and usage, once per attempt."""

    def apply(cur: SubTaskState | None) -> SubTaskState | None:
        if cur is None or cur.attempt != event.attempt or cur.status in SUBTASK_TERMINAL:
            return None  # stale attempt or already applied: a duplicate changes nothing
        return cur.model_copy(
            update={
                "status": advance(cur.status, event.status),
                "run_id": event.run_id,
                "reason": event.reason,
                "output": event.output,
                "usage": event.usage,
                "flags": event.flags,
            }
        )

    return apply


def add_dependency(size: int, position: int) -> SubTaskChange:
    """Mark dependency number `position` (of `size`) completed; a repeat changes nothing."""

    def add(cur: SubTaskState | None) -> SubTaskState | None:
        if cur is None:
            return None
        bits, added = set_bits(cur.deps_bits, size, [position])
        if not added:
            return None
        return cur.model_copy(update={"deps_bits": bits, "deps_done": cur.deps_done + added})

    return add


def block(root: str, reason: str) -> SubTaskChange:
    """`pending -> blocked`, naming the failed sub-task at the root."""

    def blocked(cur: SubTaskState | None) -> SubTaskState | None:
        if cur is None or cur.status != S.PENDING:
            return None
        return cur.model_copy(
            update={
                "status": transition(cur.status, S.BLOCKED),
                "blocked_by": root,
                "reason": reason,
            }
        )

    return blocked


def cancel_waiting(reason: str) -> SubTaskChange:
    """A sub-task not running yet ends `cancelled`."""

    def cancel(cur: SubTaskState | None) -> SubTaskState | None:
        if cur is None or cur.status not in _NOT_STARTED:
            return None
        return cur.model_copy(
            update={"status": transition(cur.status, S.CANCELLED), "reason": reason}
        )

    return cancel


def mark_ending(ending: TaskStatus, reason: str) -> MetaChange:
    """Record how a running task will end (a cancel or its deadline); the first one wins."""

    def mark(cur: TaskMeta | None) -> TaskMeta | None:
        if cur is None or cur.status != TaskStatus.RUNNING or cur.ending is not None:
            return None
        return cur.model_copy(update={"ending": ending, "reason": reason})

    return mark


def count_finished(indexes: list[int]) -> MetaChange:
    """Count these sub-tasks finished (a bitmap: counting one twice changes nothing)."""
    return lambda cur: cur.with_finished(indexes) if cur else None


def close_task(status: TaskStatus, reason: str) -> MetaChange:
    """`running -> <status>`: the task is over and its result published."""

    def close(cur: TaskMeta | None) -> TaskMeta | None:
        if cur is None or cur.status != TaskStatus.RUNNING:
            return None
        return cur.model_copy(update={"status": transition(cur.status, status), "reason": reason})

    return close
