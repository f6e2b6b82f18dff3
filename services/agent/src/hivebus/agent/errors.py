"""Errors raised by hivebus-agent.

AgentError                    root; `retryable` says whether trying again can help
├── ToolDefinitionError       a tool is badly declared or cannot be imported (configuration)
├── ToolFailure               raised by tool code to return a structured error to the model
└── ModelError                a model call failed
    └── ScriptError           a scripted model's file is invalid or exhausted
"""

from __future__ import annotations

from hivebus.contracts import ToolErrorKind


class AgentError(Exception):
    """Root of the errors raised by `hivebus.agent`."""

    retryable = False


class ToolDefinitionError(AgentError):
    """A tool cannot be loaded or is declared wrongly; the message names it and the fix."""


class ToolFailure(AgentError):  # noqa: N818 - a deliberate signal from tool code, not a crash
    """Raised inside a tool to hand the model a structured error with a suggestion."""

    def __init__(
        self,
        message: str,
        suggestion: str,
        kind: ToolErrorKind = ToolErrorKind.PERMANENT,
    ) -> None:
        """Say what went wrong and what the model should try instead."""
        super().__init__(message)
        self.kind = kind
        self.suggestion = suggestion
        self.retryable = kind in {ToolErrorKind.TRANSIENT, ToolErrorKind.TIMEOUT}


class ModelError(AgentError):
    """A model call failed; `retryable` is True for timeouts, connection errors, 429 and 5xx."""

    def __init__(
        self, message: str, *, retryable: bool = False, retry_after_s: float | None = None
    ) -> None:
        """Describe the failure, whether a retry can help, and when the server asks for one."""
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class ScriptError(ModelError):
    """A scripted model's file is invalid, or the run asked for more turns than it has."""
