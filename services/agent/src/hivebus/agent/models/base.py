"""The interface every model adapter implements, and what one model call sends and receives.

The conversation itself (`Message`, `ToolCall`, `ToolOutcome`) is part of a run's checkpoint,
so it lives in `hivebus.contracts.conversation`; it is re-exported here for adapters.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from hivebus.contracts import Message, ToolCall, ToolOutcome

__all__ = [
    "CHARS_PER_TOKEN_BOUND",
    "Message",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "ToolCall",
    "ToolOutcome",
    "ToolSpec",
    "TurnUsage",
    "request_chars",
]


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
    output_schema: dict[str, Any] | None = Field(
        default=None,
        description="The JSON Schema the final answer must match; a model that can be asked "
        "for structured output (Anthropic: a tool to answer with) is asked so.",
    )


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
    model: str | None = Field(
        default=None, description="The model that answered, as the provider names it (if said)."
    )
    stop_reason: str | None = Field(
        default=None, description="Why the model stopped, as the provider says it (if said)."
    )


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
