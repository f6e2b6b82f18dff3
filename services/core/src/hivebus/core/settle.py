"""Settlement of messages that can never be processed: dead-lettered, terminated, logged."""

from __future__ import annotations

import json
from typing import Any

from faststream import Context
from faststream.middlewares import ExceptionMiddleware
from faststream.nats import NatsBroker
from faststream.nats.message import NatsMessage
from pydantic import ValidationError

from hivebus.contracts import DeadLetter, is_identifier, subjects
from hivebus.contracts.subjects import DeadLetterKind
from hivebus.core.logging import get_logger

log = get_logger(__name__)

UNKNOWN_TASK = "unknown"
"""Task id of a dead letter whose message named no valid task."""


def _task_of(body: Any) -> str:
    task_id = body.get("task_id") if isinstance(body, dict) else None
    return task_id if isinstance(task_id, str) and is_identifier(task_id) else UNKNOWN_TASK


def invalid_message_middleware() -> ExceptionMiddleware:
    """A middleware that dead-letters and terminates (`term`) a message that fails validation.

    A malformed message will be malformed on every redelivery, so retrying it only delays the
    messages behind it; the DLQ entry keeps it with every validation error for a person.
    """
    middleware = ExceptionMiddleware()

    @middleware.add_handler(ValidationError)
    async def terminate(
        exc: ValidationError,
        message: NatsMessage = Context(),
        broker: NatsBroker = Context(),
    ) -> None:
        errors = [
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        ]
        log.error("message_invalid", subject=message.raw_message.subject, errors=errors)
        try:
            body: Any = json.loads(message.body)
        except (ValueError, UnicodeDecodeError):
            body = message.body.decode("utf-8", errors="replace")
        try:
            await broker.publish(
                DeadLetter(
                    task_id=_task_of(body),
                    why=DeadLetterKind.UNRECOVERABLE.value,
                    original={"subject": message.raw_message.subject, "body": body},
                    errors=errors,
                ),
                subjects.dead_letter(DeadLetterKind.UNRECOVERABLE),
                stream=subjects.DLQ_STREAM,
                timeout=5.0,
            )
        except Exception:  # still terminate; the log keeps it
            log.exception("dead_letter_lost")
        await message.reject()

    return middleware
