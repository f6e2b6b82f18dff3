"""The telemetry core: set-up from the `OTEL_*` settings, context in headers, recorded spans."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hivebus.core import Settings, telemetry
from hivebus.core.logging import add_trace_ids
from hivebus.core.publisher import Publisher
from hivebus.core.settle import Settler


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """An in-process SDK exporting to memory; disabled again afterwards."""
    exporter = InMemorySpanExporter()
    telemetry.install_for_tests(exporter)
    yield exporter
    telemetry.uninstall_for_tests()


def settings(**env: str) -> Settings:
    """Settings as the standard variables would give them."""
    return Settings(**env)  # type: ignore[arg-type] - the variables' names are the aliases


def test_nothing_configured_means_disabled() -> None:
    """No endpoint: no provider, a no-op tracer, nothing to export."""
    made = telemetry.build(settings(), "orchestrator")
    assert not made.enabled
    assert isinstance(made.tracer, trace.NoOpTracer)
    assert made.providers == (None, None)


def test_endpoint_enables_and_names_the_service() -> None:
    """An endpoint turns tracing on; the service is `hivebus-<service>` with its attributes."""
    made = telemetry.build(
        settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9"), "agent", **{"hivebus.role": "x"}
    )
    try:
        assert made.enabled
        provider = made.providers[0]
        assert provider is not None
        assert provider.resource.attributes["service.name"] == "hivebus-agent"
        assert provider.resource.attributes["hivebus.role"] == "x"
    finally:
        made.shutdown()


def test_standard_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard variables do what they do elsewhere.

    `OTEL_SERVICE_NAME` renames the service; `OTEL_TRACES_EXPORTER=none` and
    `OTEL_SDK_DISABLED` turn tracing off even with an endpoint; the SDK reads the sampler.
    """
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing-agents")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    endpoint = "http://127.0.0.1:9"
    made = telemetry.build(
        settings(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_SERVICE_NAME="billing-agents"), "agent"
    )
    try:
        provider = made.providers[0]
        assert provider is not None
        assert provider.resource.attributes["service.name"] == "billing-agents"
        assert not made.sampled(telemetry.trace_id_for("t"))
    finally:
        made.shutdown()
    off = settings(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_TRACES_EXPORTER="none")
    assert not telemetry.build(off, "agent").enabled
    disabled = settings(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_SDK_DISABLED="true")
    assert not telemetry.build(disabled, "agent").enabled


def test_bad_protocol_is_refused_clearly() -> None:
    """An OTLP protocol hivebus cannot speak is a settings error naming the variable."""
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        settings(OTEL_EXPORTER_OTLP_PROTOCOL="http/json")


def test_traceparent_round_trip() -> None:
    """Ids written as a traceparent read back; malformed or zero ids read as None."""
    text = telemetry.traceparent(0xABC, 0x12)
    assert text == f"00-{0xABC:032x}-{0x12:016x}-01"
    assert telemetry.parse_traceparent(text) == (0xABC, 0x12)
    assert telemetry.parse_traceparent("00-" + "0" * 32 + "-" + "1" * 16 + "-01") is None
    assert telemetry.parse_traceparent("nonsense") is None
    assert telemetry.parse_traceparent(None) is None


def test_ids_are_deterministic_and_distinct() -> None:
    """Every process derives the same ids from the same parts, different ones from others."""
    assert telemetry.span_id_for("t", "workflow") == telemetry.span_id_for("t", "workflow")
    assert telemetry.span_id_for("t", "a", "subtask") != telemetry.span_id_for("t", "b", "subtask")
    assert telemetry.trace_id_for("t").bit_length() > 64


def test_recorded_span_has_the_given_ids_and_times(spans: InMemorySpanExporter) -> None:
    """A span recorded later has exactly the derived ids, the backdated start and its error."""
    made = telemetry.current()
    trace_id, span_id = telemetry.trace_id_for("t"), telemetry.span_id_for("t", "workflow")
    made.record_span(
        "invoke_workflow t",
        trace_id=trace_id,
        span_id=span_id,
        parent=None,
        start_ns=1_000,
        end_ns=5_000,
        attributes={"hivebus.task.status": "failed"},
        error="a sub-task failed",
        events=[("deadline", {"at": "x"}, 2_000)],
    )
    (span,) = spans.get_finished_spans()
    assert (span.context.trace_id, span.context.span_id) == (trace_id, span_id)
    assert (span.start_time, span.end_time) == (1_000, 5_000)
    assert span.parent is None
    assert span.status.status_code is trace.StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "error"
    assert [e.name for e in span.events] == ["deadline"]


def test_children_of_a_span_recorded_later(spans: InMemorySpanExporter) -> None:
    """Spans started under `parent_of(...)` are children of the span with those ids."""
    made = telemetry.current()
    trace_id, span_id = telemetry.trace_id_for("t"), telemetry.span_id_for("t", "workflow")
    token = otel_context.attach(made.parent_of(trace_id, span_id))
    try:
        with made.tracer.start_as_current_span("child"):
            pass
    finally:
        otel_context.detach(token)
    (child,) = spans.get_finished_spans()
    assert child.context.trace_id == trace_id
    assert child.parent is not None
    assert child.parent.span_id == span_id


class FakeBroker:
    """Takes what the publisher publishes; the server it stands for allows 1 MB."""

    def __init__(self) -> None:
        """Nothing published yet."""
        self.headers: list[dict[str, str]] = []

    async def connect(self) -> Any:
        """A connection with the default `max_payload`."""

        class Connection:
            max_payload = 1024 * 1024

        return Connection()

    async def publish(self, _body: bytes, _subject: str, **kwargs: Any) -> None:
        """Keep the headers."""
        self.headers.append(kwargs["headers"])


class FakeMessage:
    """A delivered message with headers, acked or not."""

    def __init__(self, headers: dict[str, str]) -> None:
        """Not acked yet."""
        self.headers = headers
        self.acked = False

    async def ack(self) -> None:
        """Acked."""
        self.acked = True


async def test_context_travels_from_a_message_to_what_its_handler_publishes(
    spans: InMemorySpanExporter,  # noqa: ARG001 - tracing is on
) -> None:
    """The settler makes the message's context current; the publisher injects it again."""
    from hivebus.contracts import CancelRequested  # noqa: PLC0415 - any event will do

    broker = FakeBroker()
    publisher = Publisher(broker, 1.0)  # type: ignore[arg-type] - the two methods it uses
    incoming = telemetry.traceparent(0xFEED, 0xBEEF)
    message = FakeMessage({telemetry.TRACEPARENT: incoming})

    async def handler() -> None:
        await publisher.publish(CancelRequested(task_id="t"))

    await Settler(publisher, 1.0).run(message, handler())  # type: ignore[arg-type] - duck-typed
    assert message.acked
    assert broker.headers[0][telemetry.TRACEPARENT] == incoming
    assert telemetry.current_ids() is None  # detached after the handler


def test_log_lines_carry_the_trace(spans: InMemorySpanExporter) -> None:  # noqa: ARG001 - on
    """Inside a span, every structlog line gets `trace_id` and `span_id` in hex."""
    with telemetry.current().tracer.start_as_current_span("work") as span:
        event = add_trace_ids(None, "info", {"event": "x"})
        ids = span.get_span_context()
    assert event["trace_id"] == f"{ids.trace_id:032x}"
    assert event["span_id"] == f"{ids.span_id:016x}"
    assert "trace_id" not in add_trace_ids(None, "info", {"event": "outside"})
