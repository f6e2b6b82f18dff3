"""The orchestrator service: FastStream handlers that decode, call the scheduler, settle.

Settlement by decision: success acks; a lost compare-and-set race or a bus error naks with a
delay (redelivered, bounded by `max_deliver`); an event that can never apply (undecodable, or an
illegal transition) is terminated and logged.
"""

from __future__ import annotations

import json
from typing import Any

from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from pydantic import ValidationError

from hivebus.contracts import (
    ContractError,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStarted,
    TaskFinished,
    TaskRejected,
    TaskSubmitted,
    subjects,
)
from hivebus.contracts.subjects import EventKind
from hivebus.core import (
    HivebusConfig,
    Settings,
    bind_ids,
    get_logger,
    jetstream,
    new_broker,
    publish_event,
)
from hivebus.orchestrator.scheduler import Scheduler
from hivebus.orchestrator.state import KvStore
from hivebus.orchestrator.validation import task_id_of

log = get_logger(__name__)

NAK_DELAY_S = 1.0
WORKERS = 8


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
        kv = await js.key_value(subjects.TASKS_BUCKET)
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
