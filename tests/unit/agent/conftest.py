"""Fixtures shared by the agent runtime's unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from hivebus.agent.tool import ToolContext


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
