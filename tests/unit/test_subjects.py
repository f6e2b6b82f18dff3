"""Where each message goes is derived from the message alone, in one place."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from hivebus.contracts import (
    EVENTS_BY_KIND,
    BreakerChanged,
    BudgetWarning,
    CancelRequested,
    DeadLetter,
    DeadlineReached,
    Limits,
    NoteCommitted,
    StepRecorded,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskStatus,
    TaskFinished,
    TaskRejected,
    TaskStatus,
    TaskSubmitted,
    Usage,
    subjects,
)
from hivebus.contracts.knowledge import NoteWrite

T = "t-1"
FINISHED = SubTaskFinished(
    task_id=T,
    subtask_id="a",
    attempt=2,
    run_id="r9",
    role="writer",
    status=SubTaskStatus.COMPLETED,
    reason="done",
    usage=Usage(),
)

CASES: list[tuple[BaseModel, str, str, str]] = [
    (TaskSubmitted(task_id=T, goal="g"), "hive.tasks.submit", "TASKS", T),
    (
        SubTaskAssigned(
            task_id=T, subtask_id="a", role="writer", goal="g", prompt="p", limits=Limits()
        ),
        "hive.work.writer",
        "WORK",
        "t-1:a:1:dispatch",
    ),
    (
        SubTaskStarted(task_id=T, subtask_id="a", attempt=2, run_id="r9", role="w", model="m"),
        "hive.events.t-1.subtask_started",
        "EVENTS",
        "t-1:a:2:started-r9",
    ),
    (
        StepRecorded(
            task_id=T, subtask_id="a", attempt=2, run_id="r9", step=3, step_kind="tool", name="x"
        ),
        "hive.events.t-1.step",
        "EVENTS",
        "t-1:a:2:step-r9-3",
    ),
    (FINISHED, "hive.events.t-1.subtask_finished", "EVENTS", "t-1:a:2:finished"),
    (
        TaskRejected(task_id=T, errors=["e"]),
        "hive.events.t-1.task_rejected",
        "EVENTS",
        "t-1:-:0:rejected",
    ),
    (
        TaskFinished(
            task_id=T, status=TaskStatus.COMPLETED, reason="r", usage=Usage(), subtasks=[]
        ),
        "hive.events.t-1.task_finished",
        "EVENTS",
        "t-1:-:0:finished",
    ),
    (
        BudgetWarning(task_id=T, used_tokens=8, max_tokens=10, used_cost_usd=0, max_cost_usd=1),
        "hive.events.t-1.budget_warning",
        "EVENTS",
        "t-1:-:0:budget-warning",
    ),
    (
        NoteCommitted(task_id=T, write_id="w1", path="p.md", revision="r", commit="c", author="a"),
        "hive.events.t-1.note_committed",
        "EVENTS",
        "kb:w1:committed",
    ),
    (
        NoteWrite(write_id="w1", task_id=T, path="shared/x.md", body="b"),
        "hive.knowledge.write",
        "KNOWLEDGE",
        "kb:w1",
    ),
    (
        DeadLetter(task_id=T, subtask_id="a", attempt=2, why="max_deliveries"),
        "hive.dlq.max_deliveries",
        "DLQ",
        "t-1:a:2:dlq-max_deliveries",
    ),
    (
        DeadLetter(event_id="WORK-7", task_id="unknown", why="unrecoverable"),
        "hive.dlq.unrecoverable",
        "DLQ",
        "dlq-unrecoverable:WORK-7",
    ),
]


@pytest.mark.parametrize(("message", "subject", "stream", "msg_id"), CASES)
def test_every_message_has_one_address(
    message: BaseModel, subject: str, stream: str, msg_id: str
) -> None:
    """Subject, stream and message id follow from the message (repeats share the id)."""
    address = subjects.address(message)
    assert (address.subject, address.stream, address.msg_id) == (subject, stream, msg_id)


def test_ids_that_are_not_derived_are_the_event_ids() -> None:
    """Breaker changes and cancels are distinct facts: each keeps its own event id."""
    breaker = BreakerChanged(task_id=T, subtask_id="a", breaker="tool:x", old="closed", new="open")
    cancel = CancelRequested(task_id=T)
    assert subjects.address(breaker).msg_id == breaker.event_id
    assert subjects.address(cancel).subject == "hive.control.t-1.cancel"
    assert subjects.address(cancel).msg_id == cancel.event_id


def test_a_deadline_is_scheduled_on_control_rounded_up() -> None:
    """The deadline is held on CONTROL and delivered to `deadline` no earlier than due."""
    due = datetime(2026, 1, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    address = subjects.address(DeadlineReached(task_id=T, deadline=due))
    assert address.subject == "hive.control.t-1.deadline_at"
    assert address.schedule_target == "hive.control.t-1.deadline"
    assert address.schedule_at == datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)


def test_events_decode_by_the_last_token_of_their_subject() -> None:
    """Each event on EVENTS is decoded by its subject's kind, with no hand-kept table."""
    for model, kind in subjects.EVENTS_KINDS.items():
        assert EVENTS_BY_KIND[kind.value] is model


def test_a_message_hivebus_does_not_publish_has_no_address() -> None:
    """Asking for the address of anything else is a bug, said at once."""
    with pytest.raises(TypeError, match="does not publish Usage"):
        subjects.address(Usage())


@pytest.mark.parametrize(
    ("subject", "dead_lettered"),
    [
        ("hive.tasks.submit", True),
        ("hive.work.writer", True),
        ("hive.events.t.subtask_finished", False),
        ("hive.control.t.cancel", False),
    ],
)
def test_only_work_and_submissions_are_dead_lettered_when_unrecoverable(
    subject: str,
    dead_lettered: bool,  # noqa: FBT001 - a parametrized expectation
) -> None:
    """A person must see lost work and submissions; stale events are only logged."""
    assert subjects.dead_letters_unrecoverable(subject) is dead_lettered
