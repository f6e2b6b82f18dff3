"""W3C trace context in NATS message headers, and contexts made from ids alone.

The W3C propagator is used directly rather than the global one, so what travels does not
depend on what a user's environment installed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def inject(headers: dict[str, str], context: Context | None = None) -> None:
    """Add `traceparent` (and `tracestate`) of `context`, or the current one, when it has a span."""
    _PROPAGATOR.inject(headers, context=context)


def extract(headers: Mapping[str, str] | None) -> Context:
    """The context a message's headers carry (an empty one when they carry none)."""
    if not headers or TRACEPARENT not in headers:
        return Context()
    return _PROPAGATOR.extract(headers, context=Context())


def traceparent(trace_id: int, span_id: int, *, sampled: bool = True) -> str:
    """The W3C `traceparent` of a span."""
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def parse_traceparent(text: str | None) -> tuple[int, int] | None:
    """The trace and span ids of a `traceparent`, or None when it is not a valid one."""
    match = _TRACEPARENT.match(text.strip().lower()) if text else None
    if match is None:
        return None
    trace_id, span_id = int(match.group(1), 16), int(match.group(2), 16)
    if trace_id == 0 or span_id == 0:
        return None
    return trace_id, span_id


def parent(trace_id: int, span_id: int, *, sampled: bool = True) -> Context:
    """A context whose current span has these ids: children made in it are its children.

    For spans recorded elsewhere or later (a task's workflow span, a sub-task's span).
    """
    span_context = SpanContext(
        trace_id,
        span_id,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context), Context())


def current_ids() -> tuple[int, int] | None:
    """Trace and span id of the current span, or None outside any valid span."""
    span_context = trace.get_current_span(otel_context.get_current()).get_span_context()
    if not span_context.is_valid:
        return None
    return span_context.trace_id, span_context.span_id
