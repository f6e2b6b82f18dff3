"""The orchestrator service: FastStream handlers that decode, call the scheduler, settle.

Every handler settles through `hivebus.core.settle` (ack; nak with a delay for a retryable
error such as a lost compare-and-set race or a bus error; terminate what can never apply).
Handlers find the service in the broker's context, so `build_orchestrator_broker` needs no
server (AsyncAPI documents are generated from it) and `start_orchestrator` builds the service
ready, after connecting.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from nats.js.kv import KeyValue

from hivebus.contracts import (
    ApprovalDecided,
    ApprovalExpired,
    ApprovalRequested,
    CancelRequested,
    DeadlineReached,
    SubTaskFinished,
    SubTaskStarted,
    TaskRejected,
    TaskStatus,
    TaskSubmitted,
    subjects,
)
from hivebus.contracts.subjects import ControlKind, EventKind
from hivebus.core import (
    CoreError,
    HivebusConfig,
    Publisher,
    Settings,
    Settler,
    UndecodableError,
    bind_ids,
    get_logger,
    jetstream,
    new_broker,
    telemetry,
)
from hivebus.core.bus import pull_inbox
from hivebus.core.decoding import decode_json
from hivebus.core.knowledge_client import wait_for_write
from hivebus.core.topology import orchestrator_max_deliver
from hivebus.orchestrator.deadletters import MaxDeliveriesAdvisory, WorkDeadLetters
from hivebus.orchestrator.early import DecisionLog, StreamDecisionLog
from hivebus.orchestrator.pauses import Pauses
from hivebus.orchestrator.scheduler import Scheduler
from hivebus.orchestrator.state import KvStore
from hivebus.orchestrator.validation import task_id_of

log = get_logger(__name__)

WORKERS = 8
"""Messages one orchestrator handles at once, per consumer.

Each fetch pulls one message: FastStream queues what a fetch brings until a worker is free,
and a queued message gets no `in_progress()`, so a larger batch can outlive its ack wait
under load and be redelivered (measured: the agent-kills chaos test stalled at 16 x 16).
"""

SERVICE = "hivebus_orchestrator"
"""Name of the service in the broker's context."""


def early_wait_s(settings: Settings) -> float:
    """How long a decision waits for its request: `approval_early_wait_s`, or less.

    Bounded so that a decision is refused by its age before its consumer's last delivery
    (naks come `nak_delay_s` apart), never dropped unanswered.
    """
    by_deliveries = settings.nak_delay_s * max(orchestrator_max_deliver(settings) - 2, 0)
    return min(settings.approval_early_wait_s, by_deliveries)


class SubmissionWithoutTaskError(CoreError):
    """A submission that names no valid task id: nobody can be answered, so it is dead-lettered."""


class KvNoteWatch:
    """Whether a note write was applied, from the knowledge store's results in KV."""

    def __init__(self, results: KeyValue, wait_s: float) -> None:
        """Wait up to `wait_s` for a result before saying it is not there yet."""
        self.results = results
        self.wait_s = wait_s

    async def committed(self, write_id: str) -> bool | None:
        """See `handover.NoteWatch`."""
        result = await wait_for_write(self.results, write_id, self.wait_s)
        if result is None:
            return None
        return result.status in {"committed", "unchanged"}


class OrchestratorService:
    """The scheduler and what the handlers need around it, connected."""

    def __init__(
        self,
        settings: Settings,
        scheduler: Scheduler,
        dead_letters: WorkDeadLetters,
        publisher: Publisher,
        decisions: DecisionLog,
    ) -> None:
        """Ready to handle messages."""
        self.settings = settings
        self.scheduler = scheduler
        self.max_deliver = orchestrator_max_deliver(settings)
        self.pauses = Pauses(scheduler, decisions, early_wait_s(settings))
        self.dead_letters = dead_letters
        self.publisher = publisher
        self.settler = Settler(publisher, settings.nak_delay_s)

    async def submit(self, msg: NatsMessage) -> None:
        """Accept (idempotently) or reject a submission, decoding it within bounds.

        Raises:
            SubmissionWithoutTaskError: no task id to answer on (dead-lettered).
        """
        header = (msg.headers or {}).get(subjects.MSG_ID_HEADER)
        problem: str | None = None
        try:
            raw: Any = decode_json(msg.body)
        except UndecodableError as exc:
            raw, problem = None, str(exc)
        task_id = task_id_of(raw, header)
        if task_id is None:
            raise SubmissionWithoutTaskError(
                "submission names no valid task id (in its body or its Nats-Msg-Id header)"
                + (f"; {problem}" if problem else "")
            )
        bind_ids(task_id=task_id)
        if problem is not None:
            await self.publisher.publish(
                TaskRejected(task_id=task_id, errors=[f"submission: {problem}"])
            )
            return
        traceparent = (msg.headers or {}).get(telemetry.TRACEPARENT)
        valid = telemetry.parse_traceparent(traceparent) is not None  # a bad one is ignored
        if isinstance(raw, dict) and valid and "traceparent" not in raw:
            raw = {**raw, "traceparent": traceparent}  # the task's trace continues the client's
        await self.scheduler.submit(raw, task_id)


class Handlers:
    """The subscribers' functions; each finds the ready service and its message in the broker.

    They take only the message body as an argument: FastStream resolves `Context()`
    arguments per message in a worker thread, which cost the orchestrator about a tenth of
    its CPU, so the service and the message are read from the broker's context instead.
    """

    def __init__(self, broker: NatsBroker) -> None:
        """Serve the subscribers of `broker`."""
        self.broker = broker

    def _service(self) -> OrchestratorService:
        service: OrchestratorService = self.broker.context.get(SERVICE)
        return service

    def _message(self) -> NatsMessage:
        message: NatsMessage = self.broker.context.get_local("message")
        return message

    async def on_submit(
        self,
        body: TaskSubmitted | Any,  # noqa: ARG002 - documents the payload in AsyncAPI
    ) -> None:
        """`TaskSubmitted` on TASKS: accept (idempotently) or reject with every error.

        The raw body is validated by the scheduler rather than by the broker, so bad input is
        answered with a `TaskRejected` that lists every problem instead of being dropped.
        """
        service, msg = self._service(), self._message()
        await service.settler.run(msg, service.submit(msg))

    async def on_started(self, event: SubTaskStarted) -> None:
        """`SubTaskStarted`: mark the sub-task running."""
        bind_ids(task_id=event.task_id, subtask_id=event.subtask_id, run_id=event.run_id)
        service = self._service()
        await service.settler.run(self._message(), service.scheduler.started(event))

    async def on_finished(self, event: SubTaskFinished) -> None:
        """`SubTaskFinished`: apply once, move dependents, finish the task when nothing can."""
        bind_ids(task_id=event.task_id, subtask_id=event.subtask_id, run_id=event.run_id)
        service = self._service()
        await service.settler.run(self._message(), service.scheduler.finished(event))

    async def on_cancel(self, event: CancelRequested) -> None:
        """`CancelRequested` on CONTROL: stop the task's runs; it ends `cancelled`."""
        bind_ids(task_id=event.task_id)
        service = self._service()
        stopping = service.scheduler.stop(event.task_id, TaskStatus.CANCELLED, event.reason)
        await service.settler.run(self._message(), stopping)

    async def on_deadline(self, event: DeadlineReached) -> None:
        """The task's scheduled deadline came due: stop it; it ends `timeout`."""
        bind_ids(task_id=event.task_id)
        service = self._service()
        reason = f"deadline reached ({event.deadline.isoformat()})"
        stopping = service.scheduler.stop(event.task_id, TaskStatus.TIMEOUT, reason)
        await service.settler.run(self._message(), stopping)

    async def on_approval_requested(self, event: ApprovalRequested) -> None:
        """`ApprovalRequested`: the run paused; the sub-task waits, its expiry is scheduled."""
        bind_ids(task_id=event.task_id, subtask_id=event.subtask_id, run_id=event.run_id)
        service = self._service()
        await service.settler.run(self._message(), service.pauses.requested(event))

    async def on_approval_decided(self, event: ApprovalDecided) -> None:
        """`ApprovalDecided` on CONTROL: the first valid decision wins; others are refused.

        A decision for an approval not requested yet is delivered again (nak with delay)
        until `approval_early_wait_s` after the bus stored it, or its last delivery.
        """
        bind_ids(task_id=event.task_id)
        service, msg = self._service(), self._message()
        received_at, deliveries = _delivery(msg)
        deciding = service.pauses.decided(
            event, received_at=received_at, last_delivery=deliveries >= service.max_deliver
        )
        await service.settler.run(msg, deciding)

    async def on_approval_expired(self, event: ApprovalExpired) -> None:
        """An approval's scheduled expiry came due: a pending one resolves `reject`."""
        bind_ids(task_id=event.task_id, subtask_id=event.subtask_id)
        service = self._service()
        await service.settler.run(self._message(), service.pauses.expired(event))

    async def on_max_deliveries(self, advisory: MaxDeliveriesAdvisory) -> None:
        """A work message reached `max_deliver`: dead-letter it and fail its sub-task."""
        service = self._service()
        await service.settler.run(self._message(), service.dead_letters.handle(advisory))


def _delivery(msg: NatsMessage) -> tuple[datetime | None, int]:
    """When the bus stored a message, and how often it was delivered (None, 0 if unknown)."""
    try:
        meta = msg.raw_message.metadata
    except Exception:  # noqa: BLE001 - a core NATS message has no JetStream metadata
        return None, 0
    return meta.timestamp, int(meta.num_delivered)


def build_orchestrator_broker(settings: Settings, url: str) -> NatsBroker:
    """A FastStream broker with the orchestrator's subscribers (no connection is made)."""
    broker = new_broker(url, "orchestrator", settings)
    on = Handlers(broker)
    handlers: dict[str, Any] = {
        subjects.SUBMIT: on.on_submit,
        subjects.events_of_kind(EventKind.SUBTASK_STARTED): on.on_started,
        subjects.events_of_kind(EventKind.SUBTASK_FINISHED): on.on_finished,
        subjects.control_of_kind(ControlKind.CANCEL): on.on_cancel,
        subjects.control_of_kind(ControlKind.DEADLINE): on.on_deadline,
        subjects.events_of_kind(EventKind.APPROVAL_REQUESTED): on.on_approval_requested,
        subjects.control_of_kind(ControlKind.APPROVAL): on.on_approval_decided,
        subjects.control_of_kind(ControlKind.APPROVAL_EXPIRED): on.on_approval_expired,
        subjects.MAX_DELIVERIES_ADVISORY: on.on_max_deliveries,
    }
    for consumer in subjects.orchestrator_inputs():
        broker.subscriber(
            consumer.subject,
            stream=JStream(consumer.stream, declare=False),
            durable=consumer.durable,
            title=consumer.title,
            description=consumer.description,
            pull_sub=PullSub(batch_size=1, timeout=1.0),
            inbox_prefix=pull_inbox(settings),
            max_workers=WORKERS,
            ack_policy=AckPolicy.MANUAL,
        )(handlers[consumer.subject])
    return broker


async def start_orchestrator(settings: Settings, config: HivebusConfig, url: str) -> NatsBroker:
    """Connect, build the orchestrator ready, start its subscribers (the topology must exist)."""
    broker = build_orchestrator_broker(settings, url)
    js = await jetstream(broker)
    publisher = Publisher(broker, settings.publish_timeout_s)
    notes = KvNoteWatch(await js.key_value(subjects.KNOWLEDGE_BUCKET), settings.handover_wait_s)
    runs = await js.key_value(subjects.RUNS_BUCKET)
    tasks = await js.key_value(subjects.TASKS_BUCKET)
    store = KvStore(tasks, settings.kv_cas_attempts, publisher, runs=runs)
    scheduler = Scheduler(store, publisher, config, notes)
    dead_letters = WorkDeadLetters(js, runs, publisher, scheduler)
    service = OrchestratorService(
        settings, scheduler, dead_letters, publisher, StreamDecisionLog(js)
    )
    broker.context.set_global(SERVICE, service)
    await broker.start()
    return broker
