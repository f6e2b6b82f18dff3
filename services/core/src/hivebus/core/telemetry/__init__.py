"""OpenTelemetry for hivebus: one trace per task across services, GenAI metrics.

`configure` in a service's entry point; `current()` everywhere else. The context travels in
NATS headers: the publisher injects the current one into every message
(`hivebus.core.publisher`), the settler makes the one a message carries current while its
handler runs (`hivebus.core.settle`). Span and trace ids that any replica must agree on are
derived from task and sub-task ids (`ids`).
"""

from hivebus.core.telemetry.ids import span_id_for, trace_id_for
from hivebus.core.telemetry.metrics import METRICS, Metrics, MetricSpec, prometheus_names
from hivebus.core.telemetry.propagation import (
    TRACEPARENT,
    current_ids,
    extract,
    inject,
    parent,
    parse_traceparent,
    traceparent,
)
from hivebus.core.telemetry.setup import (
    INSTRUMENTATION,
    SpanEvent,
    Telemetry,
    bound,
    build,
    configure,
    current,
    install_for_tests,
    uninstall_for_tests,
)

__all__ = [
    "INSTRUMENTATION",
    "METRICS",
    "TRACEPARENT",
    "MetricSpec",
    "Metrics",
    "SpanEvent",
    "Telemetry",
    "bound",
    "build",
    "configure",
    "current",
    "current_ids",
    "extract",
    "inject",
    "install_for_tests",
    "parent",
    "parse_traceparent",
    "prometheus_names",
    "span_id_for",
    "trace_id_for",
    "traceparent",
    "uninstall_for_tests",
]
