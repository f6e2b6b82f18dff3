"""The scheduler's state changes, as pure functions from the current value to the next.

Each function returns a *change* for `StateStore.update_*`: given the value now (None when the
key is absent) it returns the new value, or None to leave it. Changes may run several times
(compare-and-set retries a lost race), so they only compute; every status move goes through
the transition table. A change that finds the work already done returns None: that is what
makes a redelivered event harmless.

A sub-task's state is written only when something happens to it: an absent key is a pending
sub-task with no completed dependency (`pending`), so accepting a task of 10,000 sub-tasks
writes no 10,000 keys.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from hivebus.contracts import (
    SUBTASK_TERMINAL,
    SubTaskFinished,
    SubTaskStarted,
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

_WAY_TO_RUNNING = (S.PENDING, S.READY, S.DISPATCHED, S.RUNNING)
_NOT_STARTED = frozenset({S.PENDING, S.READY, S.DISPATCHED})


def pending(subtask_id: str, role: str) -> SubTaskState:
    """The state an absent key stands for."""
    return SubTaskState(id=subtask_id, role=role)


def advance(current: SubTaskStatus, target: SubTaskStatus) -> SubTaskStatus:
    """Move to `target`, first through the steps a fast agent's event may have overtaken.

    A result can arrive before the scheduler recorded `dispatched` (the state is written after
    the publish, and the agent may be quicker) or before `started` was applied; each
    intermediate move still goes through the transition table.
    """
    if current in _WAY_TO_RUNNING:
        for step in _WAY_TO_RUNNING[_WAY_TO_RUNNING.index(current) + 1 :]:
            if target == step:
                break
            current = transition(current, step)
    return transition(current, target)


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


def mark_dispatched(subtask_id: str, role: str) -> SubTaskChange:
    """`pending -> ready -> dispatched` once the assignment is on the bus (one write)."""

    def dispatched(cur: SubTaskState | None) -> SubTaskState | None:
        state = cur or pending(subtask_id, role)
        if state.status != S.PENDING:
            return None  # already dispatched, or the agent's events overtook this write
        return state.model_copy(update={"status": advance(state.status, S.DISPATCHED)})

    return dispatched


def mark_resumed(attempt: int) -> SubTaskChange:
    """`ready -> dispatched` once a paused run's resume is on the bus (its approvals resolved)."""

    def dispatched(cur: SubTaskState | None) -> SubTaskState | None:
        if cur is None or cur.attempt != attempt or cur.status != S.READY:
            return None  # already dispatched, or the resumed run's events overtook this write
        return cur.model_copy(update={"status": transition(cur.status, S.DISPATCHED)})

    return dispatched


def dispatchable(state: SubTaskState | None, needed: int) -> bool:
    """Whether a sub-task is pending with every dependency completed."""
    deps_done = state.deps_done if state is not None else 0
    return (state is None or state.status == S.PENDING) and deps_done >= needed


def mark_running(role: str, needed: int, event: SubTaskStarted) -> SubTaskChange:
    """`dispatched -> running` for this attempt (ignored if stale or already further).

    A run of a sub-task that was never dispatchable (a dependency not completed) is ignored,
    and so is a start while a resume waits to be dispatched (`ready` with resolutions): it can
    only be the paused run's own late start, and taking it would lose the resume.
    """

    def run(cur: SubTaskState | None) -> SubTaskState | None:
        state = cur or pending(event.subtask_id, role)
        if state.attempt != event.attempt or state.status not in _NOT_STARTED:
            return None
        if state.status == S.READY and state.resume:
            return None
        if state.status == S.PENDING and state.deps_done < needed:
            return None
        return state.model_copy(
            update={"status": advance(state.status, S.RUNNING), "run_id": event.run_id}
        )

    return run


def apply_result(role: str, needed: int, event: SubTaskFinished) -> SubTaskChange:
    """The run's terminal status, reason, output and usage, once per attempt.

    A result for a sub-task that was never dispatchable (a dependency not completed) is
    ignored: no agent could have been given it.
    """

    def apply(cur: SubTaskState | None) -> SubTaskState | None:
        state = cur or pending(event.subtask_id, role)
        if state.attempt != event.attempt or state.status in SUBTASK_TERMINAL:
            return None  # stale attempt or already applied: a duplicate changes nothing
        if event.status == S.AWAITING_APPROVAL:
            return None  # a pause is an `ApprovalRequested`, never a run's end (see `approvals`)
        if state.status == S.PENDING and state.deps_done < needed:
            return None
        return state.model_copy(
            update={
                "status": advance(state.status, event.status),
                "run_id": event.run_id,
                "reason": event.reason,
                "output": event.output,
                "output_ref": event.output_ref,
                "usage": event.usage,
                "flags": event.flags,
            }
        )

    return apply


def add_dependency(subtask_id: str, role: str, size: int, position: int) -> SubTaskChange:
    """Mark dependency number `position` (of `size`) completed; a repeat changes nothing."""

    def add(cur: SubTaskState | None) -> SubTaskState | None:
        state = cur or pending(subtask_id, role)
        bits, added = set_bits(state.deps_bits, size, [position])
        if not added:
            return None
        return state.model_copy(update={"deps_bits": bits, "deps_done": state.deps_done + added})

    return add


def block(subtask_id: str, role: str, root: str, reason: str) -> SubTaskChange:
    """`pending -> blocked`, naming the failed sub-task at the root."""

    def blocked(cur: SubTaskState | None) -> SubTaskState | None:
        state = cur or pending(subtask_id, role)
        if state.status != S.PENDING:
            return None
        return state.model_copy(
            update={
                "status": transition(state.status, S.BLOCKED),
                "blocked_by": root,
                "reason": reason,
            }
        )

    return blocked


def cancel_waiting(
    subtask_id: str, role: str, reason: str, ending: TaskStatus = TaskStatus.CANCELLED
) -> SubTaskChange:
    """A sub-task that is not running ends where it is (a cancel or the deadline).

    Not started yet, it ends `cancelled`; waiting for a person, by the task's `ending`
    (`timeout` at the deadline, else `cancelled`), its approvals still listed in
    `pending_approvals` for the caller to close.
    """
    waiting_ends = S.TIMEOUT if ending == TaskStatus.TIMEOUT else S.CANCELLED

    def cancel(cur: SubTaskState | None) -> SubTaskState | None:
        state = cur or pending(subtask_id, role)
        if state.status == S.AWAITING_APPROVAL:
            target = waiting_ends
        elif state.status in _NOT_STARTED:
            target = S.CANCELLED
        else:
            return None
        status = transition(state.status, target)
        return state.model_copy(update={"status": status, "reason": reason})

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
    """`running -> <status>` (or `planning ->`, a task no plan ran for): its result is out."""

    def close(cur: TaskMeta | None) -> TaskMeta | None:
        if cur is None or cur.status not in {TaskStatus.RUNNING, TaskStatus.PLANNING}:
            return None
        return cur.model_copy(update={"status": transition(cur.status, status), "reason": reason})

    return close
