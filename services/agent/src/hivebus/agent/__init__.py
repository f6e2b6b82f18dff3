"""hivebus agent: the agent service and its bounded runtime; `@tool` declares tools."""

from hivebus.agent.errors import (
    AgentError,
    ModelError,
    ScriptError,
    ToolDefinitionError,
    ToolFailure,
)
from hivebus.agent.tool import Tool, ToolContext, tool

__all__ = [
    "AgentError",
    "ModelError",
    "ScriptError",
    "Tool",
    "ToolContext",
    "ToolDefinitionError",
    "ToolFailure",
    "tool",
]
