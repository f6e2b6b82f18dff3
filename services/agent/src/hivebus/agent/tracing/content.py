"""Prompts, completions and tool arguments as the GenAI conventions spell them on spans.

Only used when `capture_content` is on. Messages become `{"role", "parts": [...]}` with `text`,
`tool_call` and `tool_call_response` parts, JSON-encoded; secrets are redacted first, as in
step records.
"""

from __future__ import annotations

import json
from typing import Any

from hivebus.agent.models.base import Message, ModelRequest, ModelResponse
from hivebus.agent.validators.secrets import redact_secrets


def as_json(value: Any) -> str:
    """`value` with its secrets redacted, as JSON text."""
    return json.dumps(redact_secrets(value), default=str)


def _parts(message: Message) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if message.text:
        parts.append({"type": "text", "content": message.text})
    parts.extend(
        {"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.args}
        for call in message.tool_calls
    )
    parts.extend(
        {
            "type": "tool_call_response",
            "id": outcome.call_id,
            "response": outcome.result.model_dump(mode="json"),
        }
        for outcome in message.tool_results
    )
    return parts


def system_instructions(request: ModelRequest) -> str:
    """`gen_ai.system_instructions`: the role's system prompt."""
    return as_json([{"type": "text", "content": request.system}])


def input_messages(request: ModelRequest) -> str:
    """`gen_ai.input.messages`: the conversation the call sends."""
    return as_json([{"role": m.role, "parts": _parts(m)} for m in request.messages])


def output_messages(response: ModelResponse, finish_reason: str) -> str:
    """`gen_ai.output.messages`: what the model answered."""
    answer = Message(role="assistant", text=response.text, tool_calls=response.tool_calls)
    return as_json([{"role": "assistant", "parts": _parts(answer), "finish_reason": finish_reason}])
