"""The orchestrator service: FastStream handlers that decode, call the scheduler, settle.

Settlement by decision: success acks; a lost compare-and-set race or a bus error naks with a
delay (redelivered, bounded by `max_deliver`); an event that can never apply (undecodable, or an
illegal transition) is terminated and logged.
"""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from typing import Any

from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub, Schedule
from faststream.nats.annotations import NatsMessage
from nats.js.errors import KeyNotFoundError, NotFoundError
from pydantic import BaseModel, ConfigDict, ValidationError

from hivebus.contracts import (
    CancelRequested,
    ContractError,
    DeadLetter,
    DeadlineReached,
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
from hivebus.contracts.subjects import ControlKind, DeadLetterKind, EventKind
from hivebus.core import (
    HivebusConfig,
    Settings,
    bind_ids,
    get_logger,
    jetstream,
    new_broker,
    publish_event,
)
from hivebus.core.knowledge_client import publish_note_write
from hivebus.orchestrator.scheduler import Scheduler
from hivebus.orchestrator.state import KvStore
from hivebus.orchestrator.validation import task_id_of

log = get_logger(__name__)

NAK_DELAY_S = 1.0
WORKERS = 8


class MaxDeliveriesAdvisory(BaseModel):
    """The fields hivebus reads of JetStream's max-deliveries advisory."""

    model_config = ConfigDict(extra="ignore")

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int


class BusOutbox:
    """The scheduler's effects as JetStream publishes with idempotent message ids."""

    def __init__(self, broker: NatsBroker, settings: Settings) -> None:
        """Publish through `broker`."""
        self.broker = broker
        self.settings = settings

    async def dispatch(self, assignment: SubTaskAssigned) -> None:
        """`hive.work.<role>`, id `task:subtask:attempt:dispatch`."""
        await publish_event(
            self.broker,
            assignment,
            subject=subjects.work(assignment.role),
            stream=subjects.WORK_STREAM,
            msg_id=subjects.msg_id(
                assignment.task_id, assignment.subtask_id, assignment.attempt, "dispatch"
            ),
            settings=self.settings,
        )

    async def schedule_deadline(self, event: DeadlineReached) -> None:
        """A scheduled message on CONTROL: the server delivers it when due, restarts or not."""
        await self.broker.publish(
            event,
            subjects.control(event.task_id, ControlKind.DEADLINE_SCHEDULE),
            headers={subjects.MSG_ID_HEADER: subjects.msg_id(event.task_id, "-", 0, "deadline")},
            stream=subjects.CONTROL_STREAM,
            timeout=self.settings.publish_timeout_s,
            schedule=Schedule(
                time=event.deadline.replace(microsecond=0) + timedelta(seconds=1),
                target=subjects.control(event.task_id, ControlKind.DEADLINE),
            ),
        )

    async def dead_letter(self, event: DeadLetter) -> None:
        """`hive.dlq.<why>`, once per task, sub-task and attempt."""
        await publish_event(
            self.broker,
            event,
            subject=subjects.dead_letter(DeadLetterKind(event.why)),
            stream=subjects.DLQ_STREAM,
            msg_id=subjects.msg_id(
                event.task_id, event.subtask_id or "-", event.attempt, f"dlq-{event.why}"
            ),
            settings=self.settings,
        )

    async def note(self, write: NoteWrite) -> None:
        """On the KNOWLEDGE stream; the knowledge service commits it (once, by write id)."""
        await publish_note_write(self.broker, write, self.settings.publish_timeout_s)

    async def rejected(self, event: TaskRejected) -> None:
        """`hive.events.<task>.task_rejected`."""
        await publish_event(
            self.broker,
            event,
            subject=subjects.event(event.task_id, EventKind.TASK_REJECTED),
            stream=subjects.EVENTS_STREAM,
            msg_id=subjects.msg_id(event.task_id, "-", 0, "rejected"),
            settings=self.settings,
        )

    async def finished(self, event: TaskFinished) -> None:
        """`hive.events.<task>.task_finished`, once per task."""
        await publish_event(
            self.broker,
            event,
            subject=subjects.event(event.task_id, EventKind.TASK_FINISHED),
            stream=subjects.EVENTS_STREAM,
            msg_id=subjects.msg_id(event.task_id, "-", 0, "finished"),
            settings=self.settings,
        )


async def _settle_after(msg: NatsMessage, work: Any) -> None:
    try:
        await work
    except (ContractError, ValidationError) as exc:
        log.exception("event_cannot_apply", error=str(exc), subject=msg.raw_message.subject)
        await msg.reject()
        return
    except Exception as exc:  # noqa: BLE001 - transient by default; max_deliver bounds it
        log.warning("event_retry", error=repr(exc), subject=msg.raw_message.subject)
        await msg.nack(delay=NAK_DELAY_S)
        return
    await msg.ack()


class OrchestratorService:
    """Holds the scheduler once the bus is connected."""

    def __init__(self, settings: Settings, config: HivebusConfig, broker: NatsBroker) -> None:
        """Nothing connects until `prepare()`."""
        self.settings = settings
        self.config = config
        self.broker = broker
        self.scheduler: Scheduler | None = None

    async def prepare(self) -> None:
        """Connect, bind the KV store, build the scheduler (call before `broker.start()`)."""
        js = await jetstream(self.broker)
        self.js = js
        kv = await js.key_value(subjects.TASKS_BUCKET)
        self.runs_kv = await js.key_value(subjects.RUNS_BUCKET)
        self.outbox = BusOutbox(self.broker, self.settings)
        self.scheduler = Scheduler(
            KvStore(kv, self.settings.kv_cas_attempts),
            BusOutbox(self.broker, self.settings),
            self.config,
        )

    def _scheduler(self) -> Scheduler:
        if self.scheduler is None:
            raise RuntimeError("OrchestratorService.prepare() was not awaited")
        return self.scheduler

    async def on_submit(
        self,
        body: TaskSubmitted | Any,  # noqa: ARG002 - documents the payload in AsyncAPI
        msg: NatsMessage,
    ) -> None:
        """`TaskSubmitted` on TASKS: accept (idempotently) or reject with every error.

        The body is validated here rather than by the broker, so bad input is answered
        with a `TaskRejected` that lists every problem instead of being dropped.
        """
        header = (msg.headers or {}).get(subjects.MSG_ID_HEADER)
        try:
            raw = json.loads(msg.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raw = None
        task_id = task_id_of(raw, header)
        if task_id is None:
            log.error("submission_without_task_id", header=header)
            await msg.reject()
            return
        bind_ids(task_id=task_id)
        if raw is None:
            raw = "not JSON"
        await _settle_after(msg, self._scheduler().submit(raw, task_id))

    async def on_started(self, event: SubTaskStarted, msg: NatsMessage) -> None:
        """`SubTaskStarted`: mark the sub-task running."""
        await _settle_after(msg, self._scheduler().started(event))

    async def on_cancel(self, event: CancelRequested, msg: NatsMessage) -> None:
        """`CancelRequested` on CONTROL: stop the task's runs; it ends `cancelled`."""
        bind_ids(task_id=event.task_id)
        await _settle_after(
            msg, self._scheduler().stop(event.task_id, TaskStatus.CANCELLED, event.reason)
        )

    async def on_deadline(self, event: DeadlineReached, msg: NatsMessage) -> None:
        """The task's scheduled deadline came due: stop it; it ends `timeout`."""
        bind_ids(task_id=event.task_id)
        reason = f"deadline reached ({event.deadline.isoformat()})"
        await _settle_after(msg, self._scheduler().stop(event.task_id, TaskStatus.TIMEOUT, reason))

    async def on_max_deliveries(self, advisory: MaxDeliveriesAdvisory, msg: NatsMessage) -> None:
        """A work message reached `max_deliver`: dead-letter it and fail its sub-task."""
        await _settle_after(msg, self._dead_letter_work(advisory))

    async def _dead_letter_work(self, advisory: MaxDeliveriesAdvisory) -> None:
        try:
            raw = await self.js.get_msg(subjects.WORK_STREAM, advisory.stream_seq)
        except NotFoundError:
            log.info("dead_letter_already_gone", stream_seq=advisory.stream_seq)
            return
        assignment = SubTaskAssigned.model_validate_json(raw.data or b"{}")
        bind_ids(task_id=assignment.task_id, subtask_id=assignment.subtask_id)
        key = subjects.checkpoint_key(assignment.task_id, assignment.subtask_id, assignment.attempt)
        checkpoint: Any = None
        usage = Usage()
        try:
            entry = await self.runs_kv.get(key)
            checkpoint = json.loads(entry.value or b"null")
            usage = Usage.model_validate((checkpoint or {}).get("usage") or {})
        except KeyNotFoundError:
            pass
        errors = [f"delivered {advisory.deliveries} times without a result (max_deliver)"]
        await self.outbox.dead_letter(
            DeadLetter(
                task_id=assignment.task_id,
                subtask_id=assignment.subtask_id,
                attempt=assignment.attempt,
                why=DeadLetterKind.MAX_DELIVERIES.value,
                deliveries=advisory.deliveries,
                original=assignment.model_dump(mode="json"),
                checkpoint=checkpoint,
                usage=usage,
                errors=errors,
            )
        )
        with contextlib.suppress(NotFoundError):
            await self.js.delete_msg(subjects.WORK_STREAM, advisory.stream_seq)
        log.error("dead_lettered", deliveries=advisory.deliveries)
        await self._scheduler().finished(
            SubTaskFinished(
                task_id=assignment.task_id,
                subtask_id=assignment.subtask_id,
                attempt=assignment.attempt,
                run_id=(checkpoint or {}).get("run_id") or "-",
                role=assignment.role,
                status=SubTaskStatus.FAILED,
                reason=f"dead-lettered: {errors[0]}",
                output=(checkpoint or {}).get("last_text"),
                usage=usage,
            )
        )

    async def on_finished(self, event: SubTaskFinished, msg: NatsMessage) -> None:
        """`SubTaskFinished`: apply once, move dependents, finish the task when nothing can move."""
        bind_ids(task_id=event.task_id, subtask_id=event.subtask_id, run_id=event.run_id)
        await _settle_after(msg, self._scheduler().finished(event))


def build_orchestrator_broker(
    settings: Settings, config: HivebusConfig, url: str
) -> tuple[NatsBroker, OrchestratorService]:
    """A FastStream broker with the orchestrator's three subscribers."""
    broker = new_broker(url, "orchestrator")
    service = OrchestratorService(settings, config, broker)
    common: dict[str, Any] = {
        "pull_sub": PullSub(batch_size=1, timeout=1.0),
        "max_workers": WORKERS,
        "ack_policy": AckPolicy.MANUAL,
    }
    broker.subscriber(
        subjects.SUBMIT,
        stream=JStream(subjects.TASKS_STREAM, declare=False),
        durable=subjects.ORCHESTRATOR_SUBMIT_CONSUMER,
        title="tasks.submit",
        description="TaskSubmitted from clients; answered by SubTaskAssigned or TaskRejected.",
        **common,
    )(service.on_submit)
    handlers = {
        EventKind.SUBTASK_STARTED: service.on_started,
        EventKind.SUBTASK_FINISHED: service.on_finished,
    }
    controls = {ControlKind.CANCEL: service.on_cancel, ControlKind.DEADLINE: service.on_deadline}
    for control_kind, control_handler in controls.items():
        broker.subscriber(
            subjects.control_of_kind(control_kind),
            stream=JStream(subjects.CONTROL_STREAM, declare=False),
            durable=subjects.orchestrator_control_consumer(control_kind),
            title=f"control.{control_kind.value}",
            description=f"{control_kind.value} of a task.",
            **common,
        )(control_handler)
    broker.subscriber(
        subjects.MAX_DELIVERIES_ADVISORY,
        stream=JStream(subjects.ADVISORIES_STREAM, declare=False),
        durable=subjects.ORCHESTRATOR_ADVISORY_CONSUMER,
        title="advisory.max_deliveries",
        description="A work message reached max_deliver: it is dead-lettered.",
        **common,
    )(service.on_max_deliveries)
    for kind, handler in handlers.items():
        broker.subscriber(
            subjects.events_of_kind(kind),
            stream=JStream(subjects.EVENTS_STREAM, declare=False),
            durable=subjects.orchestrator_consumer(kind),
            title=f"events.{kind.value}",
            description=f"{kind.value} events from agents.",
            **common,
        )(handler)
    return broker, service
