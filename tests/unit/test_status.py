"""The sub-task and task state machines: legal moves, illegal moves, terminals, reachability."""

from __future__ import annotations

import itertools
from collections import deque

import pytest

from hivebus.contracts import (
    SUBTASK_TERMINAL,
    SUBTASK_TRANSITIONS,
    TASK_TERMINAL,
    TASK_TRANSITIONS,
    ContractError,
    IllegalTransitionError,
    SubTaskStatus,
    TaskStatus,
    transition,
)

S = SubTaskStatus
T = TaskStatus
Status = SubTaskStatus | TaskStatus
TABLES: dict[type[SubTaskStatus | TaskStatus], dict] = {
    SubTaskStatus: SUBTASK_TRANSITIONS,
    TaskStatus: TASK_TRANSITIONS,
}

LEGAL = [
    (current, target)
    for table in TABLES.values()
    for current, targets in table.items()
    for target in sorted(targets)
]
ILLEGAL = [
    (current, target)
    for enum, table in TABLES.items()
    for current, target in itertools.product(enum, repeat=2)
    if target not in table[current]
]


def _pair_id(pair: tuple[Status, Status]) -> str:
    return f"{type(pair[0]).__name__}:{pair[0].value}->{pair[1].value}"


def test_tables_cover_every_status() -> None:
    """Each transition table has a row for every status of its enum and nothing else."""
    for enum, table in TABLES.items():
        assert set(table) == set(enum)
        for targets in table.values():
            assert all(isinstance(target, enum) for target in targets)


def test_legal_and_illegal_pairs_partition_all_pairs() -> None:
    """The legal and illegal pair lists together enumerate every pair of both enums once."""
    total = len(SubTaskStatus) ** 2 + len(TaskStatus) ** 2
    assert len(LEGAL) + len(ILLEGAL) == total
    assert not set(LEGAL) & set(ILLEGAL)


@pytest.mark.parametrize("pair", LEGAL, ids=_pair_id)
def test_legal_transition_returns_target(pair: tuple[Status, Status]) -> None:
    """A move the table allows returns the target status itself."""
    current, target = pair
    assert transition(current, target) is target


@pytest.mark.parametrize("pair", ILLEGAL, ids=_pair_id)
def test_illegal_transition_raises(pair: tuple[Status, Status]) -> None:
    """A move the table does not allow raises `IllegalTransitionError` naming both statuses."""
    current, target = pair
    with pytest.raises(IllegalTransitionError) as info:
        transition(current, target)
    error = info.value
    assert isinstance(error, ContractError)
    assert not error.retryable
    assert (error.current, error.target) == (current.value, target.value)
    assert error.kind == ("sub-task" if isinstance(current, SubTaskStatus) else "task")
    assert repr(current.value) in str(error)
    assert repr(target.value) in str(error)


def test_terminal_sets_are_the_documented_ones() -> None:
    """The terminal statuses are exactly those the architecture names as endings."""
    assert {
        S.COMPLETED,
        S.FAILED,
        S.TIMEOUT,
        S.BUDGET_EXCEEDED,
        S.LOOP_DETECTED,
        S.BLOCKED,
        S.CANCELLED,
        S.REJECTED,
    } == SUBTASK_TERMINAL
    assert {
        T.COMPLETED,
        T.PARTIAL,
        T.FAILED,
        T.TIMEOUT,
        T.BUDGET_EXCEEDED,
        T.CANCELLED,
    } == TASK_TERMINAL


@pytest.mark.parametrize(
    ("terminal", "enum"),
    [(s, SubTaskStatus) for s in sorted(SUBTASK_TERMINAL)]
    + [(t, TaskStatus) for t in sorted(TASK_TERMINAL)],
    ids=lambda value: getattr(value, "value", None),
)
def test_terminal_status_has_no_way_out(
    terminal: Status, enum: type[SubTaskStatus | TaskStatus]
) -> None:
    """A terminal status has an empty row and refuses a move to every status, itself included."""
    assert TABLES[enum][terminal] == frozenset()
    for target in enum:
        with pytest.raises(IllegalTransitionError):
            transition(terminal, target)


def _reachable(table: dict, start: Status) -> set[Status]:
    seen = {start}
    queue = deque([start])
    while queue:
        for nxt in table[queue.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def test_every_subtask_status_is_reachable_from_pending() -> None:
    """Following legal moves from `pending` reaches every sub-task status."""
    assert _reachable(SUBTASK_TRANSITIONS, S.PENDING) == set(SubTaskStatus)


def test_every_task_status_is_reachable_from_submitted() -> None:
    """Following legal moves from `submitted` reaches every task status."""
    assert _reachable(TASK_TRANSITIONS, T.SUBMITTED) == set(TaskStatus)


def test_every_status_can_still_end() -> None:
    """From every non-terminal status some terminal status is reachable (no dead ends)."""
    for table, terminal in (
        (SUBTASK_TRANSITIONS, SUBTASK_TERMINAL),
        (TASK_TRANSITIONS, TASK_TERMINAL),
    ):
        for status in table:
            assert _reachable(table, status) & terminal, status


def test_documented_subtask_paths_are_legal() -> None:
    """The sub-task paths written in the architecture are walks through the table."""
    for ending in (S.COMPLETED, S.FAILED, S.TIMEOUT, S.BUDGET_EXCEEDED, S.LOOP_DETECTED):
        status = S.PENDING
        for target in (S.READY, S.DISPATCHED, S.RUNNING, ending):
            status = transition(status, target)
        assert status is ending
    approval = transition(S.RUNNING, S.AWAITING_APPROVAL)
    assert transition(approval, S.READY) is S.READY
    assert transition(approval, S.REJECTED) is S.REJECTED
    assert transition(S.PENDING, S.BLOCKED) is S.BLOCKED


def test_documented_task_paths_are_legal() -> None:
    """The task path `submitted -> planning -> running -> ending` is legal for every ending."""
    for ending in TASK_TRANSITIONS[T.RUNNING]:
        status = transition(transition(transition(T.SUBMITTED, T.PLANNING), T.RUNNING), ending)
        assert status is ending
