"""Every subject, stream, consumer, bucket and key name. A subject string appears only here.

`address(message)` derives where a message goes (subject, stream, `Nats-Msg-Id`, and for a
deadline its schedule) from the message itself, so every service publishes the same way.
The module is longer than most on purpose: it is the one file to read to know the whole bus.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel

from hivebus.contracts.approvals import (
    ApprovalDecided,
    ApprovalExpired,
    ApprovalRefused,
    ApprovalRequested,
    ApprovalResolved,
)
from hivebus.contracts.base import Event
from hivebus.contracts.events import (
    BreakerChanged,
    BudgetWarning,
    CancelRequested,
    DeadLetter,
    DeadlineReached,
    NoteCommitted,
    PlanReady,
    PlanRejected,
    StepRecorded,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStarted,
    TaskFinished,
    TaskRejected,
    TaskSubmitted,
)
from hivebus.contracts.knowledge import NoteWrite

TASKS_STREAM = "TASKS"
WORK_STREAM = "WORK"
EVENTS_STREAM = "EVENTS"
CONTROL_STREAM = "CONTROL"
DLQ_STREAM = "DLQ"
ADVISORIES_STREAM = "ADVISORIES"
"""Keeps max-deliveries advisories of WORK, so none is lost while no orchestrator runs."""

KNOWLEDGE_STREAM = "KNOWLEDGE"
KNOWLEDGE_BUCKET = "knowledge"
"""KV bucket: results of knowledge writes by write id (`write.<id>`), for writers and replays."""
KNOWLEDGE_WRITE = "hive.knowledge.write"
KNOWLEDGE_READ = "hive.knowledge.read"
KNOWLEDGE_LIST = "hive.knowledge.list"
KNOWLEDGE_SEARCH = "hive.knowledge.search"
KNOWLEDGE_LOG = "hive.knowledge.log"
KNOWLEDGE_WRITER_CONSUMER = "knowledge-writer"


def knowledge_result_key(write_id: str) -> str:
    """Key in the `knowledge` bucket holding the result of one write."""
    return f"write.{write_id}"


ARTIFACTS_BUCKET = "artifacts"
"""Object store: contents too large for one message (outputs, step records, task results)."""


def artifact_name(task_id: str, *parts: str | int) -> str:
    """Name of one object in the `artifacts` store: `<task>/<part>/...`."""
    return "/".join((task_id, *(str(part) for part in parts)))


RUNS_BUCKET = "runs"
"""KV bucket: run checkpoints, `<task>.<subtask>.<attempt>`, written after every step."""

TASKS_BUCKET = "tasks"
"""KV bucket: task state (plan, per-sub-task status, meta), changed by compare-and-set."""

SUBMIT = "hive.tasks.submit"
WORK_ALL = "hive.work.*"
EVENTS_ALL = "hive.events.>"
CONTROL_ALL = "hive.control.>"
DLQ_ALL = "hive.dlq.>"
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.WORK.*"
ORCHESTRATOR_ADVISORY_CONSUMER = "orchestrator-max-deliveries"

LEDGER_KEY_SUFFIX = "ledger"
"""KV key `<task>.ledger` in the `tasks` bucket: the task budget's reservations and usage."""

ORCHESTRATOR_SUBMIT_CONSUMER = "orchestrator-submit"


class EventKind(StrEnum):
    """The last token of an event subject."""

    TASK_REJECTED = "task_rejected"
    SUBTASK_STARTED = "subtask_started"
    STEP = "step"
    SUBTASK_FINISHED = "subtask_finished"
    TASK_FINISHED = "task_finished"
    BUDGET_WARNING = "budget_warning"
    BREAKER_CHANGED = "breaker_changed"
    NOTE_COMMITTED = "note_committed"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVAL_RESOLVED = "approval_resolved"
    APPROVAL_REFUSED = "approval_refused"
    PLAN_READY = "plan_ready"
    PLAN_REJECTED = "plan_rejected"


RESULT_KINDS: tuple[EventKind, ...] = (
    EventKind.SUBTASK_STARTED,
    EventKind.SUBTASK_FINISHED,
    EventKind.APPROVAL_REQUESTED,
)
"""Event kinds the orchestrator consumes."""


class ControlKind(StrEnum):
    """The last token of a control subject."""

    CANCEL = "cancel"
    DEADLINE = "deadline"
    DEADLINE_SCHEDULE = "deadline_at"
    """Holds the scheduled message (`Nats-Schedule`) that becomes `deadline` when due."""
    APPROVAL = "approval"
    """`ApprovalDecided`: a person's decision."""
    APPROVAL_EXPIRED = "approval_expired"
    APPROVAL_SCHEDULE = "approval_expire_at"
    """Holds the scheduled messages that become `approval_expired` when due (one per id)."""


class DeadLetterKind(StrEnum):
    """Why something was dead-lettered: the last token of a DLQ subject."""

    MAX_DELIVERIES = "max_deliveries"
    UNRECOVERABLE = "unrecoverable"
    DEADLINE = "deadline"


def control(task_id: str, kind: ControlKind) -> str:
    """Subject of one control message of one task."""
    return f"hive.control.{task_id}.{kind.value}"


def approval_schedule(task_id: str, approval: str) -> str:
    """Subject holding one approval's scheduled expiry (a schedule is one per subject)."""
    return f"hive.control.{task_id}.{ControlKind.APPROVAL_SCHEDULE.value}.{approval}"


def control_of_kind(kind: ControlKind) -> str:
    """Wildcard for one kind of control message of every task."""
    return f"hive.control.*.{kind.value}"


def orchestrator_control_consumer(kind: ControlKind) -> str:
    """Durable consumer of one control kind, shared by every orchestrator replica."""
    return f"orchestrator-control-{kind.value}"


def dead_letter(kind: DeadLetterKind) -> str:
    """Subject of a dead letter of one kind."""
    return f"hive.dlq.{kind.value}"


def checkpoint_key(task_id: str, subtask_id: str, attempt: int) -> str:
    """Key of a run checkpoint in the `runs` bucket."""
    return f"{task_id}.{subtask_id}.{attempt}"


def plan_key(task_id: str) -> str:
    """Key of a task's accepted submission in the `tasks` bucket (written once)."""
    return f"{task_id}.plan"


def meta_key(task_id: str) -> str:
    """Key of a task's `TaskMeta` in the `tasks` bucket."""
    return f"{task_id}.meta"


def result_key(task_id: str) -> str:
    """Key of a task's `TaskFinished` in the `tasks` bucket, once it is over."""
    return f"{task_id}.result"


def subtask_key(task_id: str, subtask_id: str) -> str:
    """Key of one sub-task's state in the `tasks` bucket."""
    return f"{task_id}.st.{subtask_id}"


def approval_key(task_id: str, approval: str) -> str:
    """Key of one approval's `ApprovalRecord` in the `tasks` bucket."""
    return f"{task_id}.ap.{approval}"


def planning_key(task_id: str) -> str:
    """Key of a task's `PlanningState` in the `tasks` bucket (planned or re-planned tasks)."""
    return f"{task_id}.planning"


def planned_key(task_id: str) -> str:
    """Key of a planned task's submission with its accepted plan (written once)."""
    return f"{task_id}.planned"


def revised_key(task_id: str) -> str:
    """Key of a re-planned task's `RevisedPlan` (its latest revision) in the `tasks` bucket."""
    return f"{task_id}.revised"


def ledger_key(task_id: str) -> str:
    """Key of a task's budget ledger in the `tasks` bucket."""
    return f"{task_id}.{LEDGER_KEY_SUFFIX}"


def cancel_key(task_id: str) -> str:
    """Key in the `tasks` bucket whose presence tells runs of a task to stop."""
    return f"{task_id}.cancel"


def work(role: str) -> str:
    """Subject a role's sub-tasks are dispatched on."""
    return f"hive.work.{role}"


def agent_consumer(role: str) -> str:
    """Durable pull consumer shared by every replica of a role."""
    return f"agent-{role}"


def event(task_id: str, kind: EventKind) -> str:
    """Subject of one kind of event of one task."""
    return f"hive.events.{task_id}.{kind.value}"


def orchestrator_consumer(kind: EventKind) -> str:
    """Durable consumer of one result kind, shared by every orchestrator replica."""
    return f"orchestrator-{kind.value.replace('_', '-')}"


def events_of(task_id: str) -> str:
    """Wildcard for every event of one task."""
    return f"hive.events.{task_id}.>"


def events_of_kind(kind: EventKind) -> str:
    """Wildcard for one kind of event of every task."""
    return f"hive.events.*.{kind.value}"


def msg_id(task_id: str, subtask_id: str, attempt: int | str, kind: str) -> str:
    """`Nats-Msg-Id` that makes a publish idempotent: `task:subtask:attempt:kind`."""
    return f"{task_id}:{subtask_id}:{attempt}:{kind}"


MSG_ID_HEADER = "Nats-Msg-Id"


@dataclass(frozen=True)
class Consumer:
    """One durable pull consumer: its stream, name, filter subject, and what it carries."""

    stream: str
    durable: str
    subject: str
    title: str
    description: str


def orchestrator_inputs() -> tuple[Consumer, ...]:
    """The consumers the orchestrator reads, each shared by all its replicas."""
    results = tuple(
        Consumer(
            EVENTS_STREAM,
            orchestrator_consumer(kind),
            events_of_kind(kind),
            f"events.{kind.value}",
            f"{kind.value} events from agents.",
        )
        for kind in RESULT_KINDS
    )
    controls = tuple(
        Consumer(
            CONTROL_STREAM,
            orchestrator_control_consumer(kind),
            control_of_kind(kind),
            f"control.{kind.value}",
            f"{kind.value} of a task.",
        )
        for kind in (
            ControlKind.CANCEL,
            ControlKind.DEADLINE,
            ControlKind.APPROVAL,
            ControlKind.APPROVAL_EXPIRED,
        )
    )
    submit = Consumer(
        TASKS_STREAM,
        ORCHESTRATOR_SUBMIT_CONSUMER,
        SUBMIT,
        "tasks.submit",
        "TaskSubmitted from clients; answered by SubTaskAssigned or TaskRejected.",
    )
    advisory = Consumer(
        ADVISORIES_STREAM,
        ORCHESTRATOR_ADVISORY_CONSUMER,
        MAX_DELIVERIES_ADVISORY,
        "advisory.max_deliveries",
        "A work message reached max_deliver: it is dead-lettered.",
    )
    return (submit, *results, *controls, advisory)


DEAD_LETTERED_WHEN_UNRECOVERABLE = (SUBMIT, "hive.work.")
"""Subjects (exact, or a prefix ending in '.') whose unprocessable messages are dead-lettered:
submissions and work. An unprocessable event or control message is only terminated and logged."""


def dead_letters_unrecoverable(subject: str) -> bool:
    """Whether a message on `subject` that can never be processed goes to the DLQ."""
    return any(
        subject.startswith(rule) if rule.endswith(".") else subject == rule
        for rule in DEAD_LETTERED_WHEN_UNRECOVERABLE
    )


@dataclass(frozen=True)
class Address:
    """Where one message goes: its subject, its stream, and the id that deduplicates it."""

    subject: str
    stream: str
    msg_id: str
    schedule_at: datetime | None = None
    """For a scheduled message: when the server delivers it, on `schedule_target`."""
    schedule_target: str | None = None


def _deadline_address(event: DeadlineReached) -> Address:
    # Schedules have a one-second resolution: round up, so the deadline never fires early.
    return Address(
        subject=control(event.task_id, ControlKind.DEADLINE_SCHEDULE),
        stream=CONTROL_STREAM,
        msg_id=msg_id(event.task_id, "-", 0, "deadline"),
        schedule_at=event.deadline.replace(microsecond=0) + timedelta(seconds=1),
        schedule_target=control(event.task_id, ControlKind.DEADLINE),
    )


def _approval_expiry_address(event: ApprovalExpired) -> Address:
    return Address(
        subject=approval_schedule(event.task_id, event.approval_id),
        stream=CONTROL_STREAM,
        msg_id=f"{event.approval_id}:expiry",
        schedule_at=event.expires_at.replace(microsecond=0) + timedelta(seconds=1),
        schedule_target=control(event.task_id, ControlKind.APPROVAL_EXPIRED),
    )


def _dead_letter_id(letter: DeadLetter) -> str:
    if letter.why == DeadLetterKind.UNRECOVERABLE.value and letter.subtask_id is None:
        return f"dlq-unrecoverable:{letter.event_id}"  # the caller names the source message
    return msg_id(letter.task_id, letter.subtask_id or "-", letter.attempt, f"dlq-{letter.why}")


def _event_id(event: Event) -> str:  # noqa: PLR0911, C901 - one return per kind of event
    """The `Nats-Msg-Id` of an event on EVENTS: what makes its repeats one message."""
    task = event.task_id
    if isinstance(event, SubTaskStarted):
        resumed = f"-{event.resumed}" if event.resumed else ""
        return msg_id(task, event.subtask_id, event.attempt, f"started-{event.run_id}{resumed}")
    if isinstance(event, StepRecorded):
        return msg_id(task, event.subtask_id, event.attempt, f"step-{event.run_id}-{event.step}")
    if isinstance(event, SubTaskFinished):
        return msg_id(task, event.subtask_id, event.attempt, "finished")  # one per attempt
    if isinstance(event, TaskRejected):
        return msg_id(task, "-", 0, "rejected")
    if isinstance(event, TaskFinished):
        return msg_id(task, "-", 0, "finished")
    if isinstance(event, PlanReady):
        return msg_id(task, "-", event.generation, "plan-ready")
    if isinstance(event, PlanRejected):
        return msg_id(task, "-", event.attempt, "plan-rejected")
    if isinstance(event, BudgetWarning):
        return msg_id(task, "-", 0, "budget-warning")  # once per task
    if isinstance(event, NoteCommitted) and event.write_id:
        return f"kb:{event.write_id}:committed"
    if isinstance(event, ApprovalRequested):
        return f"{event.approval_id}:requested"
    if isinstance(event, ApprovalResolved):
        return f"{event.approval_id}:resolved"
    if isinstance(event, ApprovalRefused):
        return f"{event.approval_id}:refused:{event.decision_event_id or event.event_id}"
    return event.event_id


EVENTS_KINDS: dict[type[Event], EventKind] = {
    TaskRejected: EventKind.TASK_REJECTED,
    SubTaskStarted: EventKind.SUBTASK_STARTED,
    StepRecorded: EventKind.STEP,
    SubTaskFinished: EventKind.SUBTASK_FINISHED,
    TaskFinished: EventKind.TASK_FINISHED,
    BudgetWarning: EventKind.BUDGET_WARNING,
    BreakerChanged: EventKind.BREAKER_CHANGED,
    NoteCommitted: EventKind.NOTE_COMMITTED,
    ApprovalRequested: EventKind.APPROVAL_REQUESTED,
    ApprovalResolved: EventKind.APPROVAL_RESOLVED,
    ApprovalRefused: EventKind.APPROVAL_REFUSED,
    PlanReady: EventKind.PLAN_READY,
    PlanRejected: EventKind.PLAN_REJECTED,
}
"""Every event published on EVENTS, and the last token of its subject."""


def address(message: BaseModel) -> Address:  # noqa: PLR0911 - one return per destination
    """Where `message` is published, derived from the message alone.

    Raises:
        TypeError: `message` is not a message hivebus publishes.
    """
    if isinstance(message, NoteWrite):
        return Address(KNOWLEDGE_WRITE, KNOWLEDGE_STREAM, f"kb:{message.write_id}")
    if isinstance(message, TaskSubmitted):
        return Address(SUBMIT, TASKS_STREAM, message.task_id)
    if isinstance(message, SubTaskAssigned):
        # A resume after approvals is another dispatch of the same attempt: named by the
        # approvals it carries, so it is one message however often it is published.
        kind = "dispatch" + "".join(f"-{r.approval_id}" for r in message.resume[-1:])
        dispatch_id = msg_id(message.task_id, message.subtask_id, message.attempt, kind)
        return Address(work(message.role), WORK_STREAM, dispatch_id)
    if isinstance(message, DeadlineReached):
        return _deadline_address(message)
    if isinstance(message, ApprovalExpired):
        return _approval_expiry_address(message)
    if isinstance(message, ApprovalDecided):
        return Address(
            control(message.task_id, ControlKind.APPROVAL), CONTROL_STREAM, message.event_id
        )
    if isinstance(message, CancelRequested):
        return Address(
            control(message.task_id, ControlKind.CANCEL), CONTROL_STREAM, message.event_id
        )
    if isinstance(message, DeadLetter):
        kind = DeadLetterKind(message.why)
        return Address(dead_letter(kind), DLQ_STREAM, _dead_letter_id(message))
    if isinstance(message, Event) and (kind_of := EVENTS_KINDS.get(type(message))) is not None:
        return Address(event(message.task_id, kind_of), EVENTS_STREAM, _event_id(message))
    raise TypeError(f"hivebus does not publish {type(message).__name__} messages")
