"""The shipped Grafana dashboard and Collector configuration: they name only what hivebus exports.

Every PromQL expression in `infra/grafana/hivebus-dashboard.json` is reduced to the metric
names and label names it uses; the metric names must be series of
`hivebus.core.telemetry.metrics.prometheus_names()` (the names after the OpenTelemetry
Collector's Prometheus exporter), the label names attributes those metrics really carry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hivetest import REPO

from hivebus.core.telemetry.metrics import (
    METRICS,
    Instrument,
    MetricSpec,
    prometheus_name,
    prometheus_names,
)

DASHBOARD = REPO / "infra" / "grafana" / "hivebus-dashboard.json"
COLLECTOR = REPO / "infra" / "otel" / "collector.yaml"
PROMETHEUS = REPO / "infra" / "otel" / "prometheus.yml"

DATASOURCE_INPUT = "DS_PROMETHEUS"
DATASOURCE_UID = "${" + DATASOURCE_INPUT + "}"

_SUBTASK = ("hivebus.role", "hivebus.subtask.kind")
_MODEL_CALL = ("gen_ai.provider.name", "gen_ai.request.model", "gen_ai.operation.name")
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "gen_ai.client.token.usage": (*_SUBTASK, *_MODEL_CALL, "gen_ai.token.type"),
    "gen_ai.client.operation.duration": (*_SUBTASK, *_MODEL_CALL, "error.type"),
    "gen_ai.execute_tool.duration": (*_SUBTASK, "gen_ai.tool.name", "error.type"),
    "gen_ai.invoke_agent.duration": (*_SUBTASK, "hivebus.run.status"),
    "hivebus.subtask.outcomes": (*_SUBTASK, "hivebus.subtask.status"),
    "hivebus.task.outcomes": ("hivebus.task.status",),
    "hivebus.run.steps": (*_SUBTASK, "hivebus.run.status"),
    "hivebus.tool.errors": (*_SUBTASK, "gen_ai.tool.name", "hivebus.tool.error_kind"),
    "hivebus.limit.exceeded": (*_SUBTASK, "hivebus.limit"),
    "hivebus.retries": (*_SUBTASK, "hivebus.retry.target"),
    "hivebus.breaker.opens": (*_SUBTASK, "hivebus.breaker"),
    "hivebus.cost": (*_SUBTASK, "gen_ai.request.model"),
    "hivebus.approvals.requested": (*_SUBTASK, "hivebus.approval.kind"),
    "hivebus.dlq.entries": ("hivebus.dlq.why",),
}
"""The attributes each metric is recorded with (the metrics table of the observability design)."""

RESOURCE_LABELS = frozenset({"job", "instance", "service_name", "service_namespace"})
"""Labels every series has through the Collector (`resource_to_telemetry_conversion`)."""

UNCHARTED: dict[str, str] = {}
"""Exported metrics deliberately left off the dashboard, each with the reason (none today)."""

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_NAME = r"[A-Za-z_:][\w:]*"
# A name that no letter, digit, `.` or `$` precedes (not inside `1e3`, `0.95`, `5m`, `$var`),
# taken whole, and that no `(` follows (a function call).
_IDENTIFIER = re.compile(rf"(?<![\w.$:])({_NAME})(?![\w:]|\s*\()")
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
    | {"and", "or", "unless", "atan2", "inf", "nan"}
)
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.*),)?\s*(?P<label>\w+)\s*\)\s*$")


@dataclass(frozen=True)
class Usage:
    """The metric names and label names one PromQL expression uses."""

    metrics: frozenset[str]
    labels: frozenset[str]


def promql_usage(expr: str) -> Usage:
    """The metrics and labels `expr` names, ignoring functions, keywords, literals and ranges.

    String literals go first (label values, `$variables` and regexes may hold any character),
    then label matchers `{...}` and grouping lists `by (...)` (their contents are label names),
    then ranges `[...]`; every name left that is not a call and not a keyword is a metric.
    """
    text = _STRING.sub(" ", expr)
    labels: set[str] = set()
    for matcher in _MATCHERS.findall(text):
        labels.update(re.findall(_NAME, matcher))
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    for grouped in _GROUPING.findall(text):
        labels.update(re.findall(_NAME, grouped))
    text = _GROUPING.sub(" ", text)
    metrics = {name for name in _IDENTIFIER.findall(text) if name not in _KEYWORDS}
    return Usage(frozenset(metrics), frozenset(labels))


def variable_usage(query: str) -> Usage:
    """The metrics and labels a Grafana `label_values([selector,] label)` variable query names."""
    found = _LABEL_VALUES.match(query)
    assert found is not None, f"unexpected variable query {query!r}"
    inner = promql_usage(found["selector"] or "")
    return Usage(inner.metrics, inner.labels | {found["label"]})


def load_dashboard() -> dict[str, Any]:
    """The shipped dashboard, parsed."""
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, Usage]]:
    """Every query of the dashboard (panel targets and variables), named, with its usage."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", promql_usage(target["expr"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            yield f"variable {variable['name']!r}", variable_usage(text)


def spec_of(series: str) -> MetricSpec:
    """The exported metric a Prometheus series name belongs to."""
    for spec in METRICS:
        base = prometheus_name(spec)
        suffixes = (
            ("_bucket", "_sum", "_count") if spec.instrument is Instrument.HISTOGRAM else ("",)
        )
        if series in {base + suffix for suffix in suffixes}:
            return spec
    raise LookupError(series)


def allowed_labels(series: str) -> set[str]:
    """The label names a query over `series` may filter or group by."""
    labels = {attribute.replace(".", "_") for attribute in ATTRIBUTES[spec_of(series).name]}
    if series.endswith("_bucket"):
        labels.add("le")
    return labels | RESOURCE_LABELS


def datasources(node: object) -> Iterator[object]:
    """Every value of a `datasource` key anywhere in a JSON tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            yield from datasources(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasources(item)


def load_yaml(path: Path) -> dict[str, Any]:
    """A YAML file, parsed."""
    loaded: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded


# --- the extraction itself


@pytest.mark.parametrize(
    "expr",
    [
        "rate(made_up_total[5m])",
        'sum by (le) (rate(made_up_bucket{hivebus_role=~"$role"}[$__rate_interval]))',
        "sum(made_up)",
        "made_up",
        "made_up offset 1h",
        "hivebus_retries_total / made_up",
        "sum(rate(hivebus_retries_total[5m])) * on (job) group_left made_up",
        'histogram_quantile(0.95, made_up{le!="+Inf"})',
        "max_over_time(made_up[1h:5m])",
    ],
)
def test_extraction_catches_a_made_up_metric(expr: str) -> None:
    """A metric that is not exported is found wherever it sits in an expression, and rejected."""
    found = promql_usage(expr).metrics
    assert "made_up" in {name.removesuffix("_total").removesuffix("_bucket") for name in found}
    assert not found <= prometheus_names()


def test_extraction_skips_functions_keywords_literals_and_labels() -> None:
    """Functions, grouping labels, label values, durations, numbers, variables are no metrics."""
    expr = (
        "histogram_quantile(0.95, sum by (le, gen_ai_request_model) (rate("
        'gen_ai_client_operation_duration_seconds_bucket{hivebus_role=~"$role",'
        ' error_type!="rate(fake_in_a_string[5m])"}[$__rate_interval] offset 1h))) * 1e3'
    )
    usage = promql_usage(expr)
    assert usage.metrics == {"gen_ai_client_operation_duration_seconds_bucket"}
    assert usage.labels == {"le", "gen_ai_request_model", "hivebus_role", "error_type"}


def test_variable_queries_separate_the_selector_from_the_label() -> None:
    """`label_values(metric{...}, label)`: the metric, and as labels the matchers and the label."""
    usage = variable_usage('label_values(hivebus_retries_total{hivebus_role=~"$role"}, x_y)')
    assert usage.metrics == {"hivebus_retries_total"}
    assert usage.labels == {"hivebus_role", "x_y"}
    assert variable_usage("label_values(hivebus_role)").metrics == set()


# --- the dashboard


def test_the_attribute_table_covers_exactly_the_exported_metrics() -> None:
    """This test's attribute table names every metric of `METRICS` and nothing else."""
    assert set(ATTRIBUTES) == {spec.name for spec in METRICS}


def test_every_query_names_only_exported_series() -> None:
    """Every panel target and variable query names at least one metric, each an exported series."""
    exported = prometheus_names()
    seen = 0
    for where, usage in queries(load_dashboard()):
        seen += 1
        if not where.startswith("variable"):
            assert usage.metrics, f"{where} names no metric"
        unknown = usage.metrics - exported
        assert not unknown, f"{where} names {sorted(unknown)}, not exported by hivebus"
    assert seen > 0


def test_every_query_uses_only_labels_its_metrics_carry() -> None:
    """Each label a query filters or groups by is an attribute (dots as `_`) of a metric it uses."""
    for where, usage in queries(load_dashboard()):
        known = usage.metrics & prometheus_names()  # unknown names fail the test above
        if not known:
            continue
        allowed = set().union(*(allowed_labels(series) for series in known))
        unknown = usage.labels - allowed
        assert not unknown, f"{where} uses labels {sorted(unknown)} its metrics do not carry"


def test_every_exported_metric_is_charted() -> None:
    """Each metric of `METRICS` is in some panel, unless listed in `UNCHARTED` with a reason."""
    charted = {
        spec_of(series).name
        for panel in panels(load_dashboard())
        for target in panel.get("targets", [])
        for series in promql_usage(target["expr"]).metrics & prometheus_names()
    }
    missing = {spec.name for spec in METRICS} - charted - set(UNCHARTED)
    assert not missing, f"no panel charts {sorted(missing)}"
    assert not set(UNCHARTED) & charted, "a metric listed as uncharted is charted"


def test_role_and_kind_variables_come_from_the_metric_labels() -> None:
    """The `role` and `kind` variables list the values of `hivebus_role`, `hivebus_subtask_kind`."""
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    for name, label in {"role": "hivebus_role", "kind": "hivebus_subtask_kind"}.items():
        query = variables[name]["query"]
        text = query["query"] if isinstance(query, dict) else query
        found = _LABEL_VALUES.match(text)
        assert found is not None
        assert found["label"] == label
        assert variables[name]["includeAll"]
        assert variables[name]["allValue"] == ".*"  # "All" also matches series without the label


def test_every_datasource_is_the_import_input() -> None:
    """Every datasource reference is the `${DS_PROMETHEUS}` input, declared in `__inputs`."""
    dashboard = load_dashboard()
    inputs = {i["name"]: i for i in dashboard["__inputs"]}
    assert inputs[DATASOURCE_INPUT]["type"] == "datasource"
    assert inputs[DATASOURCE_INPUT]["pluginId"] == "prometheus"
    found = list(
        datasources({"panels": dashboard["panels"], "templating": dashboard["templating"]})
    )
    assert found
    for datasource in found:
        assert datasource == {"type": "prometheus", "uid": DATASOURCE_UID}


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    """Panel ids are unique and no two panels share a grid cell (Grafana would reflow them)."""
    cells: dict[tuple[int, int], str] = {}
    ids = []
    for panel in panels(load_dashboard()):
        ids.append(panel["id"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[x, y]!r}"
                cells[x, y] = panel["title"]
    assert len(ids) == len(set(ids))


def test_dashboard_is_an_importable_export() -> None:
    """The JSON has no instance id, a fixed uid, and a schema version Grafana 10/11 reads."""
    dashboard = load_dashboard()
    assert dashboard["id"] is None
    assert dashboard["uid"]
    assert 36 <= dashboard["schemaVersion"] <= 41


# --- the Collector and Prometheus configuration


def test_collector_pipelines_use_defined_components() -> None:
    """Each pipeline's receivers, processors and exporters are defined, and so are extensions."""
    config = load_yaml(COLLECTOR)
    service = config["service"]
    for kind in ("receivers", "processors", "exporters"):
        defined = set(config[kind])
        for name, pipeline in service["pipelines"].items():
            used = set(pipeline.get(kind, []))
            assert used <= defined, f"pipeline {name} uses undefined {kind} {used - defined}"
    assert set(service.get("extensions", [])) <= set(config.get("extensions", {}))


def test_collector_sends_traces_to_jaeger_and_metrics_to_prometheus() -> None:
    """Traces go over OTLP to `jaeger:4317`; metrics to the prometheus exporter, without prefix."""
    config = load_yaml(COLLECTOR)
    pipelines = config["service"]["pipelines"]
    assert pipelines["traces"]["exporters"] == ["otlp/jaeger"]
    assert pipelines["metrics"]["exporters"] == ["prometheus"]
    jaeger = config["exporters"]["otlp/jaeger"]
    assert jaeger["endpoint"] == "jaeger:4317"
    assert jaeger["tls"]["insecure"] is True
    prometheus = config["exporters"]["prometheus"]
    assert not prometheus.get("namespace")  # the dashboard's names carry no namespace
    assert prometheus.get("add_metric_suffixes", True)  # nor without unit and `_total` suffixes
    assert prometheus["resource_to_telemetry_conversion"]["enabled"] is True


def test_collector_receives_otlp_from_other_containers() -> None:
    """The OTLP receiver listens on all interfaces, gRPC on 4317 and HTTP on 4318."""
    protocols = load_yaml(COLLECTOR)["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    for pipeline in load_yaml(COLLECTOR)["service"]["pipelines"].values():
        assert pipeline["receivers"] == ["otlp"]
        assert pipeline["processors"][0] == "memory_limiter"  # refuse data before running out


def test_prometheus_scrapes_the_collector_exporter_port() -> None:
    """prometheus.yml scrapes `otel-collector` on the port the Collector's exporter serves."""
    port = load_yaml(COLLECTOR)["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    targets = [
        target
        for job in load_yaml(PROMETHEUS)["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    assert f"otel-collector:{port}" in targets
