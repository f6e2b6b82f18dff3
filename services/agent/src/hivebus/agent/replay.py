"""What an agent runs with in a golden replay, instead of its models and (maybe) its tools.

A `Replay` is handed to `start_agent` (the local stack passes it on); without one, an agent
runs exactly as configured. `hivebus.console.golden` builds the one that plays a recording.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from hivebus.agent.models import Model
from hivebus.agent.tool import ToolContext
from hivebus.contracts import SubTaskAssigned, ToolResult

ToolRunner = Callable[[str, Any, ToolContext], Awaitable[ToolResult]]
"""Answers a tool call the toolbox accepted (known tool, allowed tier, valid arguments):
`(name, args as the model gave them, context)`."""


class Replay(Protocol):
    """Models and tool answers for a replay; None where the configured ones should run."""

    def models(self, assignment: SubTaskAssigned) -> tuple[list[Model], list[str]] | None:
        """The models for a run (and why none could be built), or None for the configured."""
        ...

    def tool_runner(self, role: str) -> ToolRunner | None:
        """What answers the role's tool calls, or None to run the real tools."""
        ...
