"""The conversation as hivebus keeps it, and the interface every model adapter implements."""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from hivebus.contracts import ToolResult


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


class ToolSpec(BaseModel):
    """What a model is told about one tool."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    input_schema: dict[str, Any]


class ModelRequest(BaseModel):
    """Everything one model call needs."""

    model_config = ConfigDict(extra="forbid")

    system: str
    messages: list[Message]
    tools: list[ToolSpec] = Field(default_factory=list)
    max_output_tokens: int = Field(default=4096, ge=1)


class TurnUsage(BaseModel):
    """Tokens one model call used, as the model reported them."""

    model_config = ConfigDict(extra="forbid")

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)


class ModelResponse(BaseModel):
    """What the model answered: text (a final answer) and/or tool calls."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: TurnUsage = Field(default_factory=TurnUsage)


class Model(Protocol):
    """A model adapter. Raises `ModelError` (with `retryable`) when a call fails."""

    route: str

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer one request."""
        ...

    def usage_bound(self, request: ModelRequest) -> TurnUsage:
        """An upper bound of what answering `request` can use, reserved against the task budget."""
        ...


CHARS_PER_TOKEN_BOUND = 2
"""Input tokens are bounded as characters / 2: real tokenizers average 3.5-4 characters."""


def request_chars(request: ModelRequest) -> int:
    """Characters in everything a request sends: system, turns, tool schemas."""
    chars = len(request.system)
    for message in request.messages:
        chars += len(message.text or "")
        chars += sum(len(str(c.args)) + len(c.name) for c in message.tool_calls)
        chars += sum(len(o.result.model_dump_json()) for o in message.tool_results)
    chars += sum(len(t.description) + len(str(t.input_schema)) for t in request.tools)
    return chars
