"""`chat <model>`: one span per model step, the whole fallback chain and its retries included.

    started      as the first model of the chain is about to be tried
    a retry      `gen_ai.retry` event (`events.retried`, from the caller's retry loop)
    a fallback   `gen_ai.fallback` event (from, to, why) as the next model is tried
    answered     the answering model names the span; usage, finish reason, response model
    failed       `error.type` (the error's class) and status error

Metrics at the end: `gen_ai.client.operation.duration`, `gen_ai.client.token.usage` (input and
output), `hivebus.cost`. Prompts and completions only with `capture_content`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

from opentelemetry.trace import SpanKind, Status, StatusCode

from hivebus.agent.models.base import Model, ModelRequest, ModelResponse
from hivebus.agent.tracing import content
from hivebus.agent.tracing.current import current_until_closed
from hivebus.agent.tracing.labels import (
    ERROR_TYPE,
    OPERATION,
    PROVIDER,
    REQUEST_MODEL,
    model_of,
    provider_of,
    run_labels,
)
from hivebus.core import telemetry

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_call",
    "refusal": "content_filter",
}
"""Anthropic's stop reasons in the conventions' words; any other is kept as the provider says."""


def finish_reason(response: ModelResponse) -> str:
    """Why the model stopped: its own word mapped, else `tool_call` or `stop` from the answer."""
    if response.stop_reason:
        return FINISH_REASONS.get(response.stop_reason, response.stop_reason)
    return "tool_call" if response.tool_calls else "stop"


class ChatTrace:
    """What a model step tells its span; this one records nothing (telemetry is off)."""

    def trying(self, route: str) -> None:
        """The model `route` is tried next."""

    def passed(self, route: str, why: str) -> None:
        """The model `route` failed or was skipped (`why`): the next one, if any, falls back."""

    def answered(self, response: ModelResponse, cost_usd: float) -> None:
        """The model tried last answered, at `cost_usd`."""


NO_CHAT = ChatTrace()


class _LiveChat(ChatTrace):
    def __init__(self, found: telemetry.Telemetry, request: ModelRequest, route: str) -> None:
        self.telemetry = found
        self.route = route
        self.fallback: tuple[str, str] | None = None
        self.response: ModelResponse | None = None
        self.cost_usd = 0.0
        self.started = time.monotonic()
        self.span = found.tracer.start_span(
            f"chat {model_of(route)}",
            kind=SpanKind.CLIENT,
            attributes={
                OPERATION: "chat",
                PROVIDER: provider_of(route),
                REQUEST_MODEL: model_of(route),
                "hivebus.model.route": route,
                "gen_ai.request.max_tokens": request.max_output_tokens,
            },
        )
        if found.capture_content:
            self.span.set_attribute(
                "gen_ai.system_instructions", content.system_instructions(request)
            )
            self.span.set_attribute("gen_ai.input.messages", content.input_messages(request))

    def trying(self, route: str) -> None:
        if self.fallback is not None:
            before, why = self.fallback
            self.span.add_event("gen_ai.fallback", {"from": before, "to": route, "why": why})
            self.fallback = None
        if route != self.route:
            self.route = route
            self.span.update_name(f"chat {model_of(route)}")
            self.span.set_attributes(
                {
                    PROVIDER: provider_of(route),
                    REQUEST_MODEL: model_of(route),
                    "hivebus.model.route": route,
                }
            )

    def passed(self, route: str, why: str) -> None:
        self.fallback = (route, why)

    def answered(self, response: ModelResponse, cost_usd: float) -> None:
        self.response, self.cost_usd = response, cost_usd

    def close(self, error: BaseException | None) -> None:
        span, response = self.span, self.response
        base = {
            OPERATION: "chat",
            PROVIDER: provider_of(self.route),
            REQUEST_MODEL: model_of(self.route),
            **run_labels(),
        }
        metrics = self.telemetry.metrics
        if response is not None:
            reason = finish_reason(response)
            used = response.usage
            span.set_attributes(
                {
                    "gen_ai.response.model": response.model or model_of(self.route),
                    "gen_ai.response.finish_reasons": [reason],
                    "gen_ai.usage.input_tokens": used.input_tokens,
                    "gen_ai.usage.output_tokens": used.output_tokens,
                    "hivebus.usage.cost_usd": self.cost_usd,
                }
            )
            if self.telemetry.capture_content:
                span.set_attribute(
                    "gen_ai.output.messages", content.output_messages(response, reason)
                )
            metrics.token_usage.record(used.input_tokens, {**base, "gen_ai.token.type": "input"})
            metrics.token_usage.record(used.output_tokens, {**base, "gen_ai.token.type": "output"})
            metrics.cost.add(self.cost_usd, {REQUEST_MODEL: model_of(self.route), **run_labels()})
        if error is not None:
            kind = type(error).__name__
            base[ERROR_TYPE] = kind
            span.set_attribute(ERROR_TYPE, kind)
            span.set_status(Status(StatusCode.ERROR, str(error)))
        metrics.operation_duration.record(time.monotonic() - self.started, base)
        span.end()


@contextlib.contextmanager
def chat_span(request: ModelRequest, models: Sequence[Model]) -> Iterator[ChatTrace]:
    """The span of one model step over `models` (the chain), current while the block runs."""
    found = telemetry.current()
    if not found.enabled or not models:
        yield NO_CHAT
        return
    live = _LiveChat(found, request, models[0].route)
    with current_until_closed(live):
        yield live
