"""structlog set-up: JSON or console output, with task/sub-task/run ids bound by context.

Every line logged inside a span also carries its `trace_id` and `span_id` (hex, as trace
backends show them), so a log line leads to its trace and back.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog
from structlog.typing import EventDict, WrappedLogger

from hivebus.core.telemetry.propagation import current_ids

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def configure_logging(
    log_format: Literal["console", "json"] = "console",
    level: str = "info",
) -> None:
    """Route every log line through structlog to stderr (stdout stays for the CLI's output)."""
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.ERROR)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # FastStream and nats-py log through the standard library; keep them at the same level.
    logging.basicConfig(level=_LEVELS.get(level, logging.ERROR), stream=sys.stderr, force=True)
    for noisy in ("faststream", "nats"):
        logging.getLogger(noisy).setLevel(max(_LEVELS.get(level, logging.ERROR), logging.WARNING))


def add_trace_ids(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """A structlog processor: the current span's `trace_id` and `span_id`, when there is one."""
    ids = current_ids()
    if ids is not None:
        event.setdefault("trace_id", f"{ids[0]:032x}")
        event.setdefault("span_id", f"{ids[1]:016x}")
    return event


def bind_ids(**ids: str | int | None) -> None:
    """Bind `task_id`, `subtask_id`, `run_id`, ... to every log line of the current context.

    Earlier bindings are cleared first, so a handler never logs the ids of a previous message.
    """
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**{k: v for k, v in ids.items() if v is not None})


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A logger for one module."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
