"""How every handler of every service settles its message: one policy, decided by the error.

    the handler's work succeeded                 -> ack
    it raised an error that is retryable         -> nak, redelivered after `nak_delay_s`
                                                    (bounded by the consumer's max_deliver)
    it raised an error that is not               -> term, logged; for submissions and work also
      (undecodable, an illegal transition,          dead-lettered as `unrecoverable`, so a
       a contract violation)                        person sees it
    it raised `SupersededError`                  -> left unsettled: another holder owns it now

The error decides, never the handler that caught it: its `retryable` attribute. A pydantic
`ValidationError` (the message breaks a contract) is never retryable. An error that does not
say (a publish timeout, a dropped connection) is taken as retryable: the bus is its usual
cause, and max_deliver bounds the redeliveries. A message too large for the server
(`MaxPayloadError`) is never retried: it would be too large again. Bodies that fail
validation before a handler runs are settled the same way, by the broker middleware from
`invalid_message_middleware`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable
from enum import StrEnum
from typing import Any

from faststream import Context
from faststream.middlewares import ExceptionMiddleware
from faststream.nats import NatsBroker
from faststream.nats.message import NatsMessage
from nats.errors import MaxPayloadError
from opentelemetry import context as otel_context
from pydantic import ValidationError

from hivebus.contracts import DeadLetter, describe_validation_error, is_identifier, subjects
from hivebus.contracts.subjects import DeadLetterKind
from hivebus.core import telemetry
from hivebus.core.errors import SupersededError
from hivebus.core.logging import get_logger
from hivebus.core.publisher import EventSink, Publisher
from hivebus.core.settings import Settings

log = get_logger(__name__)

UNKNOWN_TASK = "unknown"
"""Task id of a dead letter whose message named no valid task."""


class Settlement(StrEnum):
    """What happens to a message after its handler ran."""

    ACK = "ack"
    NAK = "nak"
    TERM = "term"
    LEAVE = "leave"


def settlement_for(exc: BaseException) -> Settlement:
    """How a message whose handler raised `exc` is settled (see the module docstring)."""
    if isinstance(exc, SupersededError):
        return Settlement.LEAVE
    if isinstance(exc, ValidationError | MaxPayloadError):
        return Settlement.TERM  # the same message breaks the same contract or bound again
    return Settlement.NAK if getattr(exc, "retryable", True) else Settlement.TERM


def _errors_of(exc: BaseException) -> list[str]:
    if isinstance(exc, ValidationError):
        return describe_validation_error(exc, "message")
    return [f"{type(exc).__name__}: {exc}"]


def _task_of(body: Any) -> str:
    task_id = body.get("task_id") if isinstance(body, dict) else None
    return task_id if isinstance(task_id, str) and is_identifier(task_id) else UNKNOWN_TASK


def _source_id(message: NatsMessage) -> str:
    """Names the message in its stream, so a dead letter of one message is stored once."""
    try:
        meta = message.raw_message.metadata
    except Exception:  # noqa: BLE001 - a core NATS message has no JetStream metadata
        return message.message_id
    return f"{meta.stream}-{meta.sequence.stream}"


class Settler:
    """Settles messages by the policy above; dead-letters through `publisher`."""

    def __init__(self, publisher: EventSink, nak_delay_s: float) -> None:
        """Nak with `nak_delay_s`; publish dead letters through `publisher`."""
        self.publisher = publisher
        self.nak_delay_s = nak_delay_s

    async def run(self, message: NatsMessage, work: Awaitable[object]) -> None:
        """Await the handler's `work`, then settle `message` by how it ended.

        The trace context the message carries is current while the work runs, so what the
        handler publishes and logs belongs to the message's trace. Work cancelled (the service
        stopping past its graceful bound) is given back at once with a nak, so another replica
        takes it (a run resumes from its last checkpoint) instead of after the ack wait.
        """
        token = otel_context.attach(telemetry.extract(message.headers))
        try:
            try:
                await work
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await asyncio.shield(message.nack())
                log.warning("message_given_back", subject=message.raw_message.subject)
                raise
            except Exception as exc:  # noqa: BLE001 - every error is settled by its own decision
                await self.settle_failure(message, exc)
                return
            await message.ack()
        finally:
            otel_context.detach(token)

    async def settle_failure(self, message: NatsMessage, exc: BaseException) -> None:
        """Nak, terminate or leave a message whose handler raised `exc`."""
        subject = message.raw_message.subject
        decision = settlement_for(exc)
        if decision is Settlement.LEAVE:
            log.warning("message_superseded", subject=subject, error=str(exc))
        elif decision is Settlement.NAK:
            log.warning("message_retry", subject=subject, error=repr(exc))
            await message.nack(delay=self.nak_delay_s)
        else:
            await self.terminate(message, _errors_of(exc))

    async def terminate(self, message: NatsMessage, errors: list[str]) -> None:
        """Terminate a message that can never be processed; dead-letter work and submissions.

        The message is terminated even when the dead letter cannot be published (logged).
        """
        subject = message.raw_message.subject
        log.error("message_unrecoverable", subject=subject, errors=errors)
        if subjects.dead_letters_unrecoverable(subject):
            try:
                body: Any = json.loads(message.body)
            except (ValueError, UnicodeDecodeError, RecursionError):
                body = message.body[: 64 * 1024].decode("utf-8", errors="replace")
            telemetry.current().metrics.dlq_entries.add(
                1, {"hivebus.dlq.why": DeadLetterKind.UNRECOVERABLE.value}
            )
            try:
                await self.publisher.publish(
                    DeadLetter(
                        event_id=_source_id(message),
                        task_id=_task_of(body),
                        why=DeadLetterKind.UNRECOVERABLE.value,
                        deliveries=_deliveries(message),
                        original={"subject": subject, "body": body},
                        errors=errors,
                    )
                )
            except Exception:  # still terminate; the log keeps it
                log.exception("dead_letter_lost")
        await message.reject()


def _deliveries(message: NatsMessage) -> int:
    try:
        return int(message.raw_message.metadata.num_delivered)
    except Exception:  # noqa: BLE001 - a core NATS message has no JetStream metadata
        return 0


def invalid_message_middleware(settings: Settings) -> ExceptionMiddleware:
    """A broker middleware that settles a body failing validation before any handler runs."""
    middleware = ExceptionMiddleware()

    @middleware.add_handler(ValidationError)
    async def terminate(
        exc: ValidationError,
        message: NatsMessage = Context(),
        broker: NatsBroker = Context(),
    ) -> None:
        settler = Settler(Publisher(broker, settings.publish_timeout_s), settings.nak_delay_s)
        await settler.terminate(message, describe_validation_error(exc, "message"))

    return middleware
