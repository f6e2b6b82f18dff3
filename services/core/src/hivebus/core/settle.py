"""Settlement of messages that can never be processed: terminated, by decision, and logged."""

from __future__ import annotations

from faststream import Context
from faststream.middlewares import ExceptionMiddleware
from faststream.nats.message import NatsMessage
from pydantic import ValidationError

from hivebus.core.logging import get_logger

log = get_logger(__name__)


def invalid_message_middleware() -> ExceptionMiddleware:
    """A middleware that terminates (`term`) a message whose body fails validation.

    A malformed event will be malformed on every redelivery, so retrying it only delays the
    messages behind it; the log line names the subject and every validation error.
    """
    middleware = ExceptionMiddleware()

    @middleware.add_handler(ValidationError)
    async def terminate(exc: ValidationError, message: NatsMessage = Context()) -> None:
        log.error(
            "message_invalid",
            subject=message.raw_message.subject,
            errors=[
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors(include_url=False)
            ],
        )
        await message.reject()

    return middleware
