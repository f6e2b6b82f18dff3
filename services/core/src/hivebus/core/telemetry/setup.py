"""The process's telemetry: set up once in the entry point from the standard `OTEL_*` settings.

Without an OTLP endpoint (or with `OTEL_SDK_DISABLED=true`, or `OTEL_TRACES_EXPORTER=none`)
nothing is set up: the tracer and meter are OpenTelemetry's no-op ones, `enabled` is False
and instrumented code skips its tracing work, so nothing leaves the process and nothing slows
down. With one, spans go through a batch processor to the OTLP exporter of the configured
protocol (`http/protobuf` by default, or `grpc`), metrics through a periodic reader; the
exporters read the rest of the standard variables (headers, timeouts, intervals) themselves,
and the SDK reads `OTEL_TRACES_SAMPLER`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, Tracer

from hivebus.core.telemetry.ids import ForcedIds, forced
from hivebus.core.telemetry.metrics import Metrics
from hivebus.core.telemetry.propagation import parent

if TYPE_CHECKING:
    from opentelemetry.util.types import Attributes

    from hivebus.core.settings import Settings

INSTRUMENTATION = "hivebus"
"""Name of the tracer and meter every hivebus span and metric comes from."""

SpanEvent = tuple[str, "Attributes", int]
"""A span event to record: its name, attributes and time (epoch nanoseconds)."""


@dataclass
class Telemetry:
    """What instrumented code uses: a tracer, the metrics, and whether any of it is exported."""

    enabled: bool
    tracer: Tracer
    metrics: Metrics
    capture_content: bool = False
    providers: tuple[TracerProvider | None, MeterProvider | None] = field(default=(None, None))

    def sampled(self, trace_id: int) -> bool:
        """Whether a root span of `trace_id` would be sampled (the same answer in every process).

        Used for the flags of contexts made from ids (`parent_of`), so children agree with the
        workflow span recorded later. The SDK's ratio sampler decides by the trace id alone.
        """
        provider = self.providers[0]
        if not self.enabled or provider is None:
            return False
        decision = provider.sampler.should_sample(None, trace_id, "hivebus").decision
        return bool(decision is Decision.RECORD_AND_SAMPLE)

    def parent_of(self, trace_id: int, span_id: int) -> Context:
        """A context that makes the spans started in it children of the span with these ids."""
        return parent(trace_id, span_id, sampled=self.sampled(trace_id))

    def record_span(
        self,
        name: str,
        *,
        trace_id: int,
        span_id: int,
        parent: Context | None,
        start_ns: int,
        end_ns: int | None = None,
        attributes: Attributes = None,
        error: str | None = None,
        error_type: str | None = None,
        links: Sequence[Link] = (),
        events: Iterable[SpanEvent] = (),
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> None:
        """Record one finished span with exactly these ids, backdated to `start_ns`.

        The trace id applies when `parent` has no span (a root); otherwise the parent's.
        `error` marks the span failed, with `error.type` = `error_type` (or `"error"`).
        """
        if not self.enabled:
            return
        with forced(trace_id, span_id):
            span = self.tracer.start_span(
                name,
                context=parent if parent is not None else Context(),
                kind=kind,
                attributes=attributes,
                links=links,
                start_time=start_ns,
            )
        for event_name, event_attributes, at_ns in events:
            span.add_event(event_name, event_attributes, timestamp=at_ns)
        if error is not None:
            span.set_attribute("error.type", error_type or "error")
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=end_ns)

    def shutdown(self) -> None:
        """Export what is buffered and stop (also done at interpreter exit)."""
        tracer_provider, meter_provider = self.providers
        if tracer_provider is not None:
            tracer_provider.shutdown()
        if meter_provider is not None:
            meter_provider.shutdown()


def _disabled() -> Telemetry:
    return Telemetry(
        enabled=False,
        tracer=trace.NoOpTracer(),
        metrics=Metrics(otel_metrics.NoOpMeter(INSTRUMENTATION)),
    )


_current: Telemetry = _disabled()
_bound: contextvars.ContextVar[Telemetry | None] = contextvars.ContextVar(
    "hivebus_telemetry", default=None
)


def current() -> Telemetry:
    """The telemetry of the service running here.

    The one `bound` in this context, else the process's: disabled (a no-op) until
    `configure` or `install_for_tests`.
    """
    return _bound.get() or _current


@contextlib.contextmanager
def bound(telemetry: Telemetry) -> Iterator[Telemetry]:
    """Make `telemetry` current in this block and in every asyncio task started from it.

    Several services in one process (`hivebus run`, `demo`) each start inside their own
    block, so their handlers' spans carry their own service name.
    """
    token = _bound.set(telemetry)
    try:
        yield telemetry
    finally:
        _bound.reset(token)


def _span_exporter(settings: Settings) -> SpanExporter | None:
    chosen = settings.otel_traces_exporter.strip().lower()
    if chosen == "none":
        return None
    if chosen == "console":
        return ConsoleSpanExporter()
    if settings.otel_exporter_otlp_endpoint is None and (
        settings.otel_exporter_otlp_traces_endpoint is None
    ):
        return None  # nothing configured: nothing exported
    if settings.otel_exporter_otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415 - grpc only when asked for
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415 - loaded only when used
        OTLPSpanExporter,
    )

    return OTLPSpanExporter()


def _metric_reader(settings: Settings) -> MetricReader | None:
    if settings.otel_metrics_exporter.strip().lower() == "none":
        return None
    if settings.otel_exporter_otlp_endpoint is None and (
        settings.otel_exporter_otlp_metrics_endpoint is None
    ):
        return None
    if settings.otel_exporter_otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # noqa: PLC0415 - grpc only when asked for
            OTLPMetricExporter as GrpcMetricExporter,
        )

        return PeriodicExportingMetricReader(GrpcMetricExporter())
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415 - loaded only when used
        OTLPMetricExporter,
    )

    return PeriodicExportingMetricReader(OTLPMetricExporter())


def _make(
    resource: Resource,
    span_processor: SimpleSpanProcessor | BatchSpanProcessor | None,
    reader: MetricReader | None,
    *,
    capture_content: bool,
) -> Telemetry:
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    tracer: Tracer = trace.NoOpTracer()
    meter: otel_metrics.Meter = otel_metrics.NoOpMeter(INSTRUMENTATION)
    if span_processor is not None:
        tracer_provider = TracerProvider(resource=resource, id_generator=ForcedIds())
        tracer_provider.add_span_processor(span_processor)
        tracer = tracer_provider.get_tracer(INSTRUMENTATION)
    if reader is not None:
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        meter = meter_provider.get_meter(INSTRUMENTATION)
    return Telemetry(
        enabled=tracer_provider is not None,
        tracer=tracer,
        metrics=Metrics(meter),
        capture_content=capture_content,
        providers=(tracer_provider, meter_provider),
    )


def _install(telemetry: Telemetry) -> Telemetry:
    global _current  # noqa: PLW0603 - one telemetry per process, set in its entry point
    _current = telemetry
    return telemetry


def build(settings: Settings, service: str, **attributes: str) -> Telemetry:
    """The telemetry of `service`, with `attributes` on its resource (not made current).

    The service is named `hivebus-<service>` unless `OTEL_SERVICE_NAME` names it; an agent
    adds its role as an attribute.
    """
    if settings.otel_sdk_disabled:
        return _disabled()
    exporter = _span_exporter(settings)
    reader = _metric_reader(settings)
    own: dict[str, str] = {"service.namespace": "hivebus", **attributes}
    if settings.otel_service_name is None:
        own["service.name"] = f"hivebus-{service}"
    resource = Resource.create(own)  # OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME join here
    processor = BatchSpanProcessor(exporter) if exporter is not None else None
    return _make(resource, processor, reader, capture_content=settings.capture_content)


def configure(settings: Settings, service: str, **attributes: str) -> Telemetry:
    """Build the process's telemetry (`build`) and make it current everywhere in the process.

    Called once, in the entry point of a process that runs one service.
    """
    return _install(build(settings, service, **attributes))


def install_for_tests(
    exporter: SpanExporter,
    reader: MetricReader | None = None,
    *,
    capture_content: bool = False,
    service: str = "test",
) -> Telemetry:
    """Export every span at once to `exporter` (an in-memory one), metrics to `reader`."""
    resource = Resource.create({"service.name": f"hivebus-{service}"})
    made = _make(resource, SimpleSpanProcessor(exporter), reader, capture_content=capture_content)
    return _install(made)


def uninstall_for_tests() -> None:
    """Back to the disabled telemetry."""
    global _current  # noqa: PLW0603 - the process-wide telemetry, reset between tests
    _current = _disabled()
