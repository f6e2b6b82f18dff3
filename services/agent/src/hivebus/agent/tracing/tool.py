"""`execute_tool <name>`: one span per tool call the run makes, its retries included.

Attributes: `gen_ai.tool.name`, `gen_ai.tool.call.id`, `hivebus.tool.tier`,
`hivebus.tool.idempotency_key`; a failed call adds `hivebus.tool.error_kind` and `error.type`
(the structured error's kind) and status error. Retries are `gen_ai.retry` events
(`events.retried`). Arguments and result only with `capture_content`.

Metrics at the end: `gen_ai.execute_tool.duration`, and `hivebus.tool.errors` for a failure.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from opentelemetry.trace import Status, StatusCode

from hivebus.agent.tracing import content
from hivebus.agent.tracing.current import current_until_closed
from hivebus.agent.tracing.labels import ERROR_TYPE, OPERATION, run_labels
from hivebus.contracts import ToolCall, ToolResult
from hivebus.core import telemetry

TOOL_NAME = "gen_ai.tool.name"
ERROR_KIND = "hivebus.tool.error_kind"


class ToolTrace:
    """What a tool call tells its span; this one records nothing (telemetry is off)."""

    def result(self, result: ToolResult) -> None:
        """The call ended with `result`."""


NO_TOOL = ToolTrace()


class _LiveTool(ToolTrace):
    def __init__(
        self, found: telemetry.Telemetry, call: ToolCall, args: Any, key: str, tier: str | None
    ) -> None:
        self.telemetry = found
        self.name = call.name
        self.started = time.monotonic()
        self.outcome: ToolResult | None = None
        attributes: dict[str, str] = {
            OPERATION: "execute_tool",
            TOOL_NAME: call.name,
            "gen_ai.tool.call.id": call.id,
            "gen_ai.tool.type": "function",
            "hivebus.tool.idempotency_key": key,
        }
        if tier is not None:
            attributes["hivebus.tool.tier"] = tier
        if found.capture_content:
            attributes["gen_ai.tool.call.arguments"] = content.as_json(args)
        self.span = found.tracer.start_span(f"execute_tool {call.name}", attributes=attributes)

    def result(self, result: ToolResult) -> None:
        self.outcome = result

    def close(self, error: BaseException | None) -> None:
        span, result = self.span, self.outcome
        labels = {TOOL_NAME: self.name, **run_labels()}
        metrics = self.telemetry.metrics
        failure: str | None = None
        if result is not None and result.error is not None:
            kind = result.error.kind.value
            failure = result.error.message
            span.set_attributes({ERROR_KIND: kind, ERROR_TYPE: kind})
            labels[ERROR_TYPE] = kind
            metrics.tool_errors.add(1, {TOOL_NAME: self.name, ERROR_KIND: kind, **run_labels()})
        elif error is not None:
            failure = f"{type(error).__name__}: {error}"
            span.set_attribute(ERROR_TYPE, type(error).__name__)
            labels[ERROR_TYPE] = type(error).__name__
        if result is not None and self.telemetry.capture_content:
            shown = result.data if result.ok else result.model_dump(mode="json")
            span.set_attribute("gen_ai.tool.call.result", content.as_json(shown))
        if failure is not None:
            span.set_status(Status(StatusCode.ERROR, failure))
        metrics.tool_duration.record(time.monotonic() - self.started, labels)
        span.end()


@contextlib.contextmanager
def tool_span(call: ToolCall, args: Any, *, key: str, tier: str | None) -> Iterator[ToolTrace]:
    """The span of one call of `call.name` with `args`, current while the block runs."""
    found = telemetry.current()
    if not found.enabled:
        yield NO_TOOL
        return
    live = _LiveTool(found, call, args, key, tier)
    with current_until_closed(live):
        yield live
