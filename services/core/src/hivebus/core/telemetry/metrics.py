"""The metrics hivebus exports: names from the GenAI conventions where they exist, else `hivebus.*`.

Every instrument is declared once in `METRICS`; `Metrics` makes them on a meter (a no-op
meter when nothing is exported), and `prometheus_names` says what each is called after the
OpenTelemetry Collector's Prometheus exporter (which the shipped Grafana dashboard queries).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from opentelemetry.metrics import Counter, Histogram, Meter


class Instrument(StrEnum):
    """The two kinds of instrument hivebus uses."""

    COUNTER = "counter"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric: its attribute on `Metrics`, its name, kind, unit and meaning."""

    attribute: str
    name: str
    instrument: Instrument
    unit: str
    description: str
    buckets: tuple[float, ...] = ()
    """Histogram bucket boundaries (the SDK's defaults suit milliseconds, not these units)."""


SECONDS_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                   40.96, 81.92)  # fmt: skip
"""The GenAI conventions' advice for operation durations."""

TOKEN_BUCKETS = tuple(float(4**n) for n in range(14))
"""1, 4, 16, ... 67,108,864: the GenAI conventions' advice for token usage."""

STEP_BUCKETS = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0)
"""Steps per run: small integers, limits are tens."""


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "token_usage",
        "gen_ai.client.token.usage",
        Instrument.HISTOGRAM,
        "{token}",
        "Tokens per model call, by gen_ai.token.type (input or output).",
        TOKEN_BUCKETS,
    ),
    MetricSpec(
        "operation_duration",
        "gen_ai.client.operation.duration",
        Instrument.HISTOGRAM,
        "s",
        "Duration of one model call, retries included.",
        SECONDS_BUCKETS,
    ),
    MetricSpec(
        "tool_duration",
        "gen_ai.execute_tool.duration",
        Instrument.HISTOGRAM,
        "s",
        "Duration of one tool call, retries included.",
        SECONDS_BUCKETS,
    ),
    MetricSpec(
        "agent_duration",
        "gen_ai.invoke_agent.duration",
        Instrument.HISTOGRAM,
        "s",
        "Duration of one run (one delivery of a sub-task that ran the loop).",
        SECONDS_BUCKETS,
    ),
    MetricSpec(
        "subtask_outcomes",
        "hivebus.subtask.outcomes",
        Instrument.COUNTER,
        "{subtask}",
        "Sub-tasks that reached a result, by hivebus.subtask.status.",
    ),
    MetricSpec(
        "task_outcomes",
        "hivebus.task.outcomes",
        Instrument.COUNTER,
        "{task}",
        "Tasks that finished, by hivebus.task.status.",
    ),
    MetricSpec(
        "run_steps",
        "hivebus.run.steps",
        Instrument.HISTOGRAM,
        "{step}",
        "Steps (model calls plus tool calls) of one finished run.",
        STEP_BUCKETS,
    ),
    MetricSpec(
        "tool_errors",
        "hivebus.tool.errors",
        Instrument.COUNTER,
        "{error}",
        "Tool calls that ended in an error, by hivebus.tool.error_kind.",
    ),
    MetricSpec(
        "limits_exceeded",
        "hivebus.limit.exceeded",
        Instrument.COUNTER,
        "{run}",
        "Runs stopped by a limit, by hivebus.limit.",
    ),
    MetricSpec(
        "retries",
        "hivebus.retries",
        Instrument.COUNTER,
        "{retry}",
        "Model and tool calls tried again, by hivebus.retry.target.",
    ),
    MetricSpec(
        "breaker_opens",
        "hivebus.breaker.opens",
        Instrument.COUNTER,
        "{open}",
        "Circuit breakers that opened, by hivebus.breaker.",
    ),
    MetricSpec(
        "cost",
        "hivebus.cost",
        Instrument.COUNTER,
        "USD",
        "Model cost from the configured price table.",
    ),
    MetricSpec(
        "approvals_requested",
        "hivebus.approvals.requested",
        Instrument.COUNTER,
        "{approval}",
        "Approvals asked of people (escalations), by hivebus.approval.kind.",
    ),
    MetricSpec(
        "dlq_entries",
        "hivebus.dlq.entries",
        Instrument.COUNTER,
        "{entry}",
        "Messages dead-lettered, by hivebus.dlq.why.",
    ),
)
"""Every metric hivebus exports."""


class Metrics:
    """The instruments of `METRICS`, made on one meter; each is an attribute named in its spec."""

    token_usage: Histogram
    operation_duration: Histogram
    tool_duration: Histogram
    agent_duration: Histogram
    subtask_outcomes: Counter
    task_outcomes: Counter
    run_steps: Histogram
    tool_errors: Counter
    limits_exceeded: Counter
    retries: Counter
    breaker_opens: Counter
    cost: Counter
    approvals_requested: Counter
    dlq_entries: Counter

    def __init__(self, meter: Meter) -> None:
        """Create every instrument on `meter`."""
        for spec in METRICS:
            if spec.instrument is Instrument.COUNTER:
                made: Counter | Histogram = meter.create_counter(
                    spec.name, unit=spec.unit, description=spec.description
                )
            else:
                made = meter.create_histogram(
                    spec.name,
                    unit=spec.unit,
                    description=spec.description,
                    explicit_bucket_boundaries_advisory=list(spec.buckets) or None,
                )
            setattr(self, spec.attribute, made)


_PROMETHEUS_UNITS = {"s": "seconds", "ms": "milliseconds", "By": "bytes"}
"""The units hivebus's metrics use that the Collector spells out (others stay as written)."""


def prometheus_name(spec: MetricSpec) -> str:
    """The metric's base name after the Collector's Prometheus exporter (suffixes added).

    Dots become underscores; a unit in braces (an annotation) is dropped, a known unit is
    spelled out, any other is appended as written; counters end in `_total`.
    """
    base = spec.name.replace(".", "_")
    unit = "" if spec.unit.startswith("{") else _PROMETHEUS_UNITS.get(spec.unit, spec.unit)
    if unit:
        base = f"{base}_{unit}"
    return f"{base}_total" if spec.instrument is Instrument.COUNTER else base


def prometheus_names() -> set[str]:
    """Every series name a Prometheus scraping the Collector sees for hivebus's metrics."""
    names: set[str] = set()
    for spec in METRICS:
        base = prometheus_name(spec)
        if spec.instrument is Instrument.HISTOGRAM:
            names.update({f"{base}_bucket", f"{base}_sum", f"{base}_count"})
        else:
            names.add(base)
    return names
