"""Every subject, stream, consumer and bucket name. A subject string appears only here."""

from __future__ import annotations

from enum import StrEnum

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


RESULT_KINDS: tuple[EventKind, ...] = (EventKind.SUBTASK_STARTED, EventKind.SUBTASK_FINISHED)
"""Event kinds the orchestrator consumes."""


class ControlKind(StrEnum):
    """The last token of a control subject."""

    CANCEL = "cancel"
    DEADLINE = "deadline"
    DEADLINE_SCHEDULE = "deadline_at"
    """Holds the scheduled message (`Nats-Schedule`) that becomes `deadline` when due."""


class DeadLetterKind(StrEnum):
    """Why something was dead-lettered: the last token of a DLQ subject."""

    MAX_DELIVERIES = "max_deliveries"
    UNRECOVERABLE = "unrecoverable"
    DEADLINE = "deadline"


def control(task_id: str, kind: ControlKind) -> str:
    """Subject of one control message of one task."""
    return f"hive.control.{task_id}.{kind.value}"


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
