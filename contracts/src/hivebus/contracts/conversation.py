"""The conversation of a run as hivebus keeps it: turns, tool calls and their results.

It is part of a run's checkpoint, which other services read (the orchestrator's dead letters,
the console), so it lives with the contracts rather than inside the agent.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hivebus.contracts.tools import ToolResult


class ToolCall(BaseModel):
    """A model's request to call one tool."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    args: Any = Field(default_factory=dict, description="Untrusted: validated by the toolbox.")


class ToolOutcome(BaseModel):
    """The result of one tool call, as handed back to the model."""

    model_config = ConfigDict(extra="forbid")

    call_id: str
    name: str
    result: ToolResult


class Message(BaseModel):
    """One turn: the user's text, the assistant's text and tool calls, or tool results."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant", "tool"]
    text: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_results: list[ToolOutcome] = Field(default_factory=list)
