"""Tool tiers and the structured result every tool call returns to the model."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Tier(StrEnum):
    """How risky a tool's effect is; a tool without a tier counts as `destructive`."""

    READ = "read"
    WRITE_SAFE = "write_safe"
    WRITE_RISKY = "write_risky"
    DESTRUCTIVE = "destructive"


class ToolErrorKind(StrEnum):
    """Why a tool call did not succeed; tells the model (and the retry layer) what to do next."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"
    TIMEOUT = "timeout"
    INVALID_ARGUMENTS = "invalid_arguments"
    UNKNOWN_TOOL = "unknown_tool"
    DENIED = "denied"
    REJECTED = "rejected"
    """A person declined the call (or nobody decided in time)."""


class ToolError(BaseModel):
    """A failed tool call, written for the model to act on."""

    model_config = ConfigDict(extra="forbid")

    kind: ToolErrorKind
    message: str = Field(description="What went wrong.")
    suggestion: str = Field(description="What the model can try instead.")


class ToolResult(BaseModel):
    """The structured outcome of one tool call: `ok` with `data`, or an `error`."""

    model_config = ConfigDict(extra="forbid")

    ok: bool
    data: Any = None
    error: ToolError | None = None

    @classmethod
    def success(cls, data: Any) -> ToolResult:
        """A successful call with its data."""
        return cls(ok=True, data=data)

    @classmethod
    def failure(cls, kind: ToolErrorKind, message: str, suggestion: str) -> ToolResult:
        """A failed call with its kind, message and suggestion."""
        return cls(ok=False, error=ToolError(kind=kind, message=message, suggestion=suggestion))
