"""Dead-lettering work that never produced a result: JetStream's max-deliveries advisory.

A work message delivered `max_deliver` times without being acked makes the server publish an
advisory (kept in the ADVISORIES stream, so none is missed while no orchestrator runs). The
orchestrator then puts the original assignment, the run's last checkpoint and its usage on the
DLQ, removes the message from WORK, and fails the sub-task so its dependents are blocked and the
rest of the task goes on.
"""

from __future__ import annotations

import contextlib

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue
from opentelemetry import context as otel_context
from pydantic import BaseModel, ConfigDict, ValidationError

from hivebus.contracts import (
    DeadLetter,
    RunCheckpoint,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStatus,
    Usage,
    subjects,
)
from hivebus.contracts.subjects import DeadLetterKind
from hivebus.core import EventSink, bind_ids, get_logger, telemetry
from hivebus.core import kv as kvcas
from hivebus.orchestrator.scheduler import Scheduler

log = get_logger(__name__)


class MaxDeliveriesAdvisory(BaseModel):
    """The fields hivebus reads of JetStream's max-deliveries advisory."""

    model_config = ConfigDict(extra="ignore")

    stream: str
    consumer: str
    stream_seq: int
    deliveries: int


class WorkDeadLetters:
    """Turns a max-deliveries advisory into a dead letter and a failed sub-task."""

    def __init__(
        self, js: JetStreamContext, runs: KeyValue, events: EventSink, scheduler: Scheduler
    ) -> None:
        """Read WORK through `js` and checkpoints from `runs`; publish through `events`."""
        self.js = js
        self.runs = runs
        self.events = events
        self.scheduler = scheduler

    async def handle(self, advisory: MaxDeliveriesAdvisory) -> None:
        """Dead-letter the message the advisory names (once), then fail its sub-task."""
        try:
            raw = await self.js.get_msg(subjects.WORK_STREAM, advisory.stream_seq)
        except NotFoundError:
            log.info("dead_letter_already_gone", stream_seq=advisory.stream_seq)
            return
        assignment = SubTaskAssigned.model_validate_json(raw.data or b"{}")
        bind_ids(task_id=assignment.task_id, subtask_id=assignment.subtask_id)
        key = subjects.checkpoint_key(assignment.task_id, assignment.subtask_id, assignment.attempt)
        try:
            checkpoint, _ = await kvcas.read(self.runs, key, RunCheckpoint)
        except ValidationError as exc:  # a damaged checkpoint must not keep the letter back
            log.warning("checkpoint_unreadable", key=key, error=str(exc))
            checkpoint = None
        usage = checkpoint.usage if checkpoint is not None else Usage()
        errors = [f"delivered {advisory.deliveries} times without a result (max_deliver)"]
        telemetry.current().metrics.dlq_entries.add(
            1,
            {
                "hivebus.dlq.why": DeadLetterKind.MAX_DELIVERIES.value,
                "hivebus.role": assignment.role,
                "hivebus.subtask.kind": assignment.subtask_kind or "",
            },
        )
        # In the trace of the assignment it gives up on (its sub-task's span), for replays.
        token = otel_context.attach(telemetry.extract(raw.headers))
        try:
            await self.events.publish(
                DeadLetter(
                    task_id=assignment.task_id,
                    subtask_id=assignment.subtask_id,
                    attempt=assignment.attempt,
                    why=DeadLetterKind.MAX_DELIVERIES.value,
                    deliveries=advisory.deliveries,
                    original=assignment.model_dump(mode="json"),
                    checkpoint=checkpoint.model_dump(mode="json") if checkpoint else None,
                    usage=usage,
                    errors=errors,
                )
            )
        finally:
            otel_context.detach(token)
        with contextlib.suppress(NotFoundError):
            await self.js.delete_msg(subjects.WORK_STREAM, advisory.stream_seq)
        log.error("dead_lettered", deliveries=advisory.deliveries)
        await self.scheduler.finished(
            SubTaskFinished(
                task_id=assignment.task_id,
                subtask_id=assignment.subtask_id,
                attempt=assignment.attempt,
                run_id=checkpoint.run_id if checkpoint else "-",
                role=assignment.role,
                status=SubTaskStatus.FAILED,
                reason=f"dead-lettered: {errors[0]}",
                output=checkpoint.last_text if checkpoint else None,
                usage=usage,
            )
        )
