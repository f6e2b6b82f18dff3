"""The orchestrator's spans: one workflow span per task over one span per sub-task, ids derived."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel
from test_scheduler import TASK, FakeOutbox, Hive, node, plan

from hivebus.contracts import SubTaskAssigned, SubTaskStatus
from hivebus.core import HivebusConfig, telemetry

S = SubTaskStatus
CHAIN = plan(node("a"), node("b", ["a"]), node("c", ["b"]))


class TracingOutbox(FakeOutbox):
    """Also keeps the trace context current at each dispatch, as the publisher would inject."""

    def __init__(self) -> None:
        """Nothing published yet."""
        super().__init__()
        self.contexts: dict[str, tuple[int, int] | None] = {}

    async def publish(self, message: BaseModel) -> None:
        """Note the context of a dispatch, then take the message."""
        if isinstance(message, SubTaskAssigned):
            self.contexts[message.subtask_id] = telemetry.current_ids()
        await super().publish(message)


@pytest.fixture
def spans() -> Iterator[tuple[InMemorySpanExporter, InMemoryMetricReader]]:
    """Tracing on, in memory; off again afterwards."""
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    telemetry.install_for_tests(exporter, reader)
    yield exporter, reader
    telemetry.uninstall_for_tests()


def named(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    """Finished spans by name."""
    return {span.name: span for span in exporter.get_finished_spans()}


async def test_a_task_is_one_workflow_span_over_its_subtask_spans(
    hive_config: HivebusConfig, spans: tuple[InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    """Derived ids; the sub-tasks under the workflow, failed and blocked ones marked failed.

    Every dispatch is published in its sub-task's span.
    """
    exporter, _ = spans
    outbox = TracingOutbox()
    hive = Hive(hive_config, outbox)
    await hive.submit(CHAIN)
    await hive.run({"b": S.FAILED})
    got = named(exporter)
    trace_id = telemetry.trace_id_for(TASK)
    workflow = got[f"invoke_workflow {TASK}"]
    assert (workflow.context.trace_id, workflow.context.span_id) == (
        trace_id,
        telemetry.span_id_for(TASK, "workflow"),
    )
    assert workflow.parent is None
    assert workflow.status.status_code is trace.StatusCode.ERROR
    attributes: Any = workflow.attributes
    assert attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert attributes["hivebus.task.status"] == "partial"  # a completed, b failed
    assert not [key for key in attributes if key.startswith("gen_ai.usage")]
    for sid, status in (("a", "completed"), ("b", "failed"), ("c", "blocked")):
        span = got[f"subtask {sid}"]
        assert span.parent is not None
        assert span.parent.span_id == workflow.context.span_id
        assert span.context.span_id == telemetry.span_id_for(TASK, sid, "subtask")
        assert span.attributes is not None
        assert span.attributes["hivebus.subtask.status"] == status
        failed = span.status.status_code is trace.StatusCode.ERROR
        assert failed == (status != "completed")
    assert outbox.contexts == {
        "a": (trace_id, telemetry.span_id_for(TASK, "a", "subtask")),
        "b": (trace_id, telemetry.span_id_for(TASK, "b", "subtask")),
    }
    a = await hive.state("a")
    assert a.dispatched_at is not None
    assert a.ended_at is not None


async def test_a_client_traceparent_makes_the_workflow_its_child(
    hive_config: HivebusConfig, spans: tuple[InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    """A submission carrying a traceparent puts the task in the client's trace, under its span."""
    exporter, _ = spans
    hive = Hive(hive_config)
    await hive.submit({**CHAIN, "traceparent": telemetry.traceparent(0xC0FFEE, 0xBEE)})
    await hive.run()
    workflow = named(exporter)[f"invoke_workflow {TASK}"]
    assert workflow.context.trace_id == 0xC0FFEE
    assert workflow.parent is not None
    assert workflow.parent.span_id == 0xBEE
    assert named(exporter)["subtask c"].context.trace_id == 0xC0FFEE


async def test_outcomes_are_counted_by_role_kind_and_status(
    hive_config: HivebusConfig, spans: tuple[InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    """`hivebus.subtask.outcomes` and `hivebus.task.outcomes` count what the task ended with."""
    _, reader = spans
    hive = Hive(hive_config)
    await hive.submit(CHAIN)
    await hive.run({"b": S.FAILED})
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    outcomes = {
        (p.attributes["hivebus.subtask.status"], p.attributes["hivebus.role"]): p.value
        for p in points["hivebus.subtask.outcomes"]
    }
    assert outcomes == {
        ("completed", "writer"): 1,
        ("failed", "writer"): 1,
        ("blocked", "writer"): 1,
    }
    assert [p.attributes["hivebus.task.status"] for p in points["hivebus.task.outcomes"]] == [
        "partial"
    ]


async def test_nothing_is_recorded_or_stamped_while_tracing_is_off(
    hive_config: HivebusConfig,
) -> None:
    """Off (the default): no span ids in context at dispatch, no times kept in the state."""
    outbox = TracingOutbox()
    hive = Hive(hive_config, outbox)
    await hive.submit(CHAIN)
    await hive.run()
    assert set(outbox.contexts.values()) == {None}
    a = await hive.state("a")
    assert a.dispatched_at is None
    assert a.ended_at is None


async def test_a_replayed_dead_letter_links_to_the_trace_it_replays(
    hive_config: HivebusConfig, spans: tuple[InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    """`replay_of` (set by `hivebus dlq replay`) becomes a link on the new task's workflow span."""
    exporter, _ = spans
    hive = Hive(hive_config)
    await hive.submit({**CHAIN, "replay_of": telemetry.traceparent(0xD1ED, 0xF00D)})
    await hive.run()
    workflow = named(exporter)[f"invoke_workflow {TASK}"]
    assert workflow.context.trace_id == telemetry.trace_id_for(TASK)  # a trace of its own
    assert [(link.context.trace_id, link.context.span_id) for link in workflow.links] == [
        (0xD1ED, 0xF00D)
    ]
