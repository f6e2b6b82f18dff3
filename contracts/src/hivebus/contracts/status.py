"""Status enums, their transition tables, and the one function that applies a transition."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from hivebus.contracts.errors import IllegalTransitionError


class SubTaskStatus(StrEnum):
    """Where one sub-task is in its life."""

    PENDING = "pending"
    READY = "ready"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    BUDGET_EXCEEDED = "budget_exceeded"
    LOOP_DETECTED = "loop_detected"
    AWAITING_APPROVAL = "awaiting_approval"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


class TaskStatus(StrEnum):
    """Where one task is in its life.

    A refused submission never becomes a task: it gets a `TaskRejected` event and no state.
    """

    SUBMITTED = "submitted"
    PLANNING = "planning"
    RUNNING = "running"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    TIMEOUT = "timeout"
    BUDGET_EXCEEDED = "budget_exceeded"
    CANCELLED = "cancelled"


_S = SubTaskStatus
_RUN_ENDINGS = frozenset(
    {
        _S.COMPLETED,
        _S.FAILED,
        _S.TIMEOUT,
        _S.BUDGET_EXCEEDED,
        _S.LOOP_DETECTED,
        _S.AWAITING_APPROVAL,
        _S.CANCELLED,
    }
)

SUBTASK_TRANSITIONS: dict[SubTaskStatus, frozenset[SubTaskStatus]] = {
    _S.PENDING: frozenset({_S.READY, _S.BLOCKED, _S.CANCELLED}),
    _S.READY: frozenset({_S.DISPATCHED, _S.CANCELLED}),
    _S.DISPATCHED: frozenset({_S.RUNNING, _S.CANCELLED, _S.TIMEOUT}),
    _S.RUNNING: _RUN_ENDINGS | {_S.BLOCKED},
    _S.AWAITING_APPROVAL: frozenset({_S.READY, _S.REJECTED, _S.CANCELLED, _S.TIMEOUT}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset(),
    _S.TIMEOUT: frozenset(),
    _S.BUDGET_EXCEEDED: frozenset(),
    _S.LOOP_DETECTED: frozenset(),
    _S.BLOCKED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.REJECTED: frozenset(),
}
"""Allowed next statuses of a sub-task. `running -> blocked` covers a run that needed a
dependency output it could not use; the usual way to `blocked` is from `pending`.
`awaiting_approval` is a paused run: resolved (any decision, `reject` included: the model
reads the rejection and goes on), it is `ready` to be dispatched again; the task's cancel or
deadline ends it where it waits. `rejected` stays in the table but nothing moves there now."""

SUBTASK_TERMINAL: frozenset[SubTaskStatus] = frozenset(
    s for s, nxt in SUBTASK_TRANSITIONS.items() if not nxt
)
"""Statuses a sub-task never leaves."""

_T = TaskStatus
TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    _T.SUBMITTED: frozenset({_T.PLANNING, _T.CANCELLED}),
    _T.PLANNING: frozenset({_T.RUNNING, _T.FAILED, _T.CANCELLED, _T.TIMEOUT}),
    _T.RUNNING: frozenset(
        {_T.COMPLETED, _T.PARTIAL, _T.FAILED, _T.TIMEOUT, _T.BUDGET_EXCEEDED, _T.CANCELLED}
    ),
    _T.COMPLETED: frozenset(),
    _T.PARTIAL: frozenset(),
    _T.FAILED: frozenset(),
    _T.TIMEOUT: frozenset(),
    _T.BUDGET_EXCEEDED: frozenset(),
    _T.CANCELLED: frozenset(),
}
"""Allowed next statuses of a task."""

TASK_TERMINAL: frozenset[TaskStatus] = frozenset(
    s for s, nxt in TASK_TRANSITIONS.items() if not nxt
)
"""Statuses a task never leaves."""

StatusT = TypeVar("StatusT", SubTaskStatus, TaskStatus)


def transition(current: StatusT, target: StatusT) -> StatusT:
    """Return `target` if the table allows `current -> target`, else raise.

    Raises:
        IllegalTransitionError: the move is not in the transition table (a bug in the caller).
    """
    if isinstance(current, SubTaskStatus):
        allowed: frozenset[SubTaskStatus] | frozenset[TaskStatus] = SUBTASK_TRANSITIONS[current]
        kind = "sub-task"
    else:
        allowed = TASK_TRANSITIONS[current]
        kind = "task"
    if target not in allowed:
        raise IllegalTransitionError(kind, current.value, target.value)
    return target
