"""`queue_wait <subtask_id>`: how long an assignment sat in the work stream before pick-up.

Recorded when a worker picks an assignment up, backdated to the message's JetStream
timestamp, as a child of the context the message carries (the sub-task's span). Only for the
first delivery of a dispatch: a redelivery's stream timestamp is the first delivery's, so its
wait would count the earlier attempt's work too.

A message that carries no trace context (published by something that does not trace) gets
the sub-task's span by its derived ids (`trace_id_for(task)`, `span_id_for(task, subtask,
"subtask")`), so the agent's spans of one task still share its trace.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from faststream.nats.annotations import NatsMessage
from opentelemetry import context as otel_context

from hivebus.agent.tracing.labels import KIND, ROLE
from hivebus.contracts import SubTaskAssigned
from hivebus.core import get_logger, telemetry

log = get_logger(__name__)

_OFF = contextlib.nullcontext()


def _wait_started_ns(msg: NatsMessage) -> int | None:
    """The stream timestamp of a first delivery (None: a redelivery, or no JetStream metadata)."""
    try:
        meta = msg.raw_message.metadata
    except Exception:  # noqa: BLE001 - a message without JetStream metadata has no wait to show
        return None
    if meta.num_delivered != 1:
        return None
    return int(meta.timestamp.timestamp() * 1_000_000_000)


@contextlib.contextmanager
def _picked_up(
    found: telemetry.Telemetry, assignment: SubTaskAssigned, msg: NatsMessage
) -> Iterator[None]:
    token = None
    if telemetry.current_ids() is None:
        token = otel_context.attach(
            found.parent_of(
                telemetry.trace_id_for(assignment.task_id),
                telemetry.span_id_for(assignment.task_id, assignment.subtask_id, "subtask"),
            )
        )
    try:
        started = _wait_started_ns(msg)
        if started is not None:
            now = time.time_ns()
            found.tracer.start_span(
                f"queue_wait {assignment.subtask_id}",
                start_time=min(started, now),
                attributes={
                    "hivebus.task.id": assignment.task_id,
                    "hivebus.subtask.id": assignment.subtask_id,
                    ROLE: assignment.role,
                    KIND: assignment.subtask_kind or "",
                    "hivebus.attempt": assignment.attempt,
                    "messaging.system": "nats",
                    "messaging.destination.name": msg.raw_message.subject,
                },
            ).end(end_time=now)
        yield
    finally:
        if token is not None:
            otel_context.detach(token)


def picked_up(
    assignment: SubTaskAssigned, msg: NatsMessage
) -> contextlib.AbstractContextManager[None]:
    """Around a delivery's work: its queue wait recorded, the sub-task's span its parent."""
    found = telemetry.current()
    if not found.enabled:
        return _OFF
    return _picked_up(found, assignment, msg)
