"""Fixtures shared by the agent runtime's unit tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hivebus.agent.tool import ToolContext
from hivebus.core import telemetry

from .fakes import Traced


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty workspace directory, one level below the test's temporary directory."""
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture
def tool_context(workspace: Path) -> ToolContext:
    """The context a tool receives for one call of one run in `workspace`."""
    return ToolContext(
        workspace=workspace,
        task_id="task-1",
        subtask_id="sub-1",
        run_id="run1",
        step=2,
        idempotency_key="run1:2:call_1",
    )


def _install(*, capture_content: bool) -> Iterator[Traced]:
    traced = Traced(InMemorySpanExporter(), InMemoryMetricReader())
    telemetry.install_for_tests(traced.exporter, traced.reader, capture_content=capture_content)
    try:
        yield traced
    finally:
        telemetry.uninstall_for_tests()


@pytest.fixture
def traced() -> Iterator[Traced]:
    """Telemetry on, content off (the default), exported in memory."""
    yield from _install(capture_content=False)


@pytest.fixture
def traced_content() -> Iterator[Traced]:
    """Telemetry on with `capture_content`."""
    yield from _install(capture_content=True)
