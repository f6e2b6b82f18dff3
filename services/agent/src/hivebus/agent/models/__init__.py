"""Model adapters behind one interface: `anthropic:<model>` and `scripted:<file>`."""

from hivebus.agent.models.base import (
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolOutcome,
    TurnUsage,
)
from hivebus.agent.models.factory import ModelFactory

__all__ = [
    "Message",
    "Model",
    "ModelFactory",
    "ModelRequest",
    "ModelResponse",
    "ToolCall",
    "ToolOutcome",
    "TurnUsage",
]
