"""A real OTLP/HTTP receiver for tests: what services export, decoded with `opentelemetry-proto`.

It listens on a free loopback port, answers `POST /v1/traces` and `POST /v1/metrics` as a
collector does (protobuf in, an empty export response out) and keeps every span and metric
name it received, so a test can assert on the trace the services really sent.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

STATUS_ERROR = 2
"""`Status.code` of a failed span in OTLP."""


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind is None:
        return None
    return getattr(value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    items: list[KeyValue] = list(pairs)
    return {pair.key: _value(pair.value) for pair in items}


@dataclass
class ReceivedSpan:
    """One span as it arrived: ids in hex, the exporting service, attributes, links, events."""

    service: str
    resource: dict[str, Any]
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    start_ns: int
    end_ns: int
    links: list[tuple[str, str]] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """Whether the span's status is error."""
        return self.status_code == STATUS_ERROR


class OtlpReceiver:
    """Start with `with OtlpReceiver() as receiver:`; `receiver.endpoint` is the base URL."""

    def __init__(self) -> None:
        """Bound to a free port on 127.0.0.1; serving starts on `__enter__`."""
        self.spans: list[ReceivedSpan] = []
        self.metric_names: set[str] = set()
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                receiver.take(self.path, self.rfile.read(length))
                reply = (
                    ExportTraceServiceResponse()
                    if self.path.endswith("traces")
                    else ExportMetricsServiceResponse()
                ).SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's signature
                """Quiet: the test output is for the test."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """The base URL to give as `OTEL_EXPORTER_OTLP_ENDPOINT`."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def take(self, path: str, body: bytes) -> None:
        """Decode one export request."""
        with self._lock:
            self.requests += 1
            if path.endswith("/v1/traces"):
                self._take_spans(body)
            elif path.endswith("/v1/metrics"):
                request = ExportMetricsServiceRequest.FromString(body)
                for resource in request.resource_metrics:
                    for scope in resource.scope_metrics:
                        self.metric_names.update(metric.name for metric in scope.metrics)

    def _take_spans(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            described = _attributes(resource.resource.attributes)
            service = str(described.get("service.name", ""))
            for scope in resource.scope_spans:
                self.spans.extend(
                    ReceivedSpan(
                        service=service,
                        resource=described,
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes=_attributes(span.attributes),
                        status_code=span.status.code,
                        status_message=span.status.message,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                        events=[(e.name, _attributes(e.attributes)) for e in span.events],
                    )
                    for span in scope.spans
                )

    def snapshot(self) -> list[ReceivedSpan]:
        """Every span received so far."""
        with self._lock:
            return list(self.spans)

    def __enter__(self) -> Self:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
