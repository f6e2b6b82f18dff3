"""`anthropic:<model>` through the official SDK; any Anthropic-compatible endpoint via base URL."""

from __future__ import annotations

import json
from typing import Any

import anthropic

from hivebus.agent.errors import ModelError
from hivebus.agent.models.base import (
    CHARS_PER_TOKEN_BOUND,
    Message,
    ModelRequest,
    ModelResponse,
    ToolCall,
    TurnUsage,
    request_chars,
)

HTTP_TOO_MANY_REQUESTS = 429
HTTP_SERVER_ERROR = 500


def to_anthropic_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Translate hivebus turns into the Messages API's content blocks."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "user":
            out.append({"role": "user", "content": message.text or ""})
        elif message.role == "assistant":
            blocks: list[dict[str, Any]] = []
            if message.text:
                blocks.append({"type": "text", "text": message.text})
            blocks.extend(
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.name,
                    "input": call.args if isinstance(call.args, dict) else {},
                }
                for call in message.tool_calls
            )
            out.append({"role": "assistant", "content": blocks})
        else:
            out.append(
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": outcome.call_id,
                            "content": json.dumps(outcome.result.model_dump(mode="json")),
                            "is_error": not outcome.result.ok,
                        }
                        for outcome in message.tool_results
                    ],
                }
            )
    return out


def _retry_after(exc: anthropic.APIStatusError) -> float | None:
    """Seconds from a `retry-after` header (seconds form only), if the server sent one."""
    try:
        value = exc.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (AttributeError, ValueError):
        return None


def classify(exc: anthropic.AnthropicError) -> ModelError:
    """Map the SDK's error classes to a `ModelError` that knows whether a retry can help."""
    if isinstance(exc, anthropic.APITimeoutError | anthropic.APIConnectionError):
        return ModelError(f"model endpoint unreachable: {type(exc).__name__}", retryable=True)
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        retryable = status == HTTP_TOO_MANY_REQUESTS or status >= HTTP_SERVER_ERROR
        error = ModelError(f"model endpoint answered {status}: {exc.message}", retryable=retryable)
        error.retry_after_s = _retry_after(exc)
        return error
    return ModelError(f"model call failed: {type(exc).__name__}: {exc}")


class AnthropicModel:
    """A Claude model (or any Anthropic-compatible endpoint) behind the `Model` interface."""

    def __init__(
        self,
        route: str,
        model_name: str,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 0,
    ) -> None:
        """Create the SDK client.

        Retries: the SDK's own retry loop is switched off (`max_retries=0` by default) and
        the runtime retries instead (`hivebus.core.reliability.retry`), so that every retry
        is bounded by the run's limits, counted against its wall clock, visible in the step
        record, and seen by the circuit breaker. `retry-after` is passed up on the error.
        """
        self.route = route
        self.model_name = model_name
        self.client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=max_retries
        )

    def usage_bound(self, request: ModelRequest) -> TurnUsage:
        """Input bounded as characters / 2, output by `max_output_tokens` (a hard API cap)."""
        return TurnUsage(
            input_tokens=request_chars(request) // CHARS_PER_TOKEN_BOUND + 1,
            output_tokens=request.max_output_tokens,
        )

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """One Messages API call; tool use and usage read from the response.

        With an object `output_schema` the final answer is asked for as structured output:
        a tool (`ANSWER_TOOL`) whose input is the schema; the model's call of it is read back
        as the answer's JSON text, which the loop checks as it checks any answer.
        """
        tools: Any = [
            {"name": t.name, "description": t.description, "input_schema": t.input_schema}
            for t in request.tools
        ]
        extra: dict[str, Any] = {}
        schema = request.output_schema
        if schema is not None and schema.get("type") == "object":
            tools.append(
                {"name": ANSWER_TOOL, "description": ANSWER_DESCRIPTION, "input_schema": schema}
            )
            if not request.tools:  # nothing else to call: the answer must come as the tool
                extra["tool_choice"] = {"type": "tool", "name": ANSWER_TOOL}
        messages: Any = to_anthropic_messages(request.messages)
        try:
            reply = await self.client.messages.create(
                model=self.model_name,
                system=request.system,
                messages=messages,
                tools=tools,
                max_tokens=request.max_output_tokens,
                **extra,
            )
        except anthropic.AnthropicError as exc:
            raise classify(exc) from exc
        except (ValueError, TypeError, AttributeError) as exc:
            # A 200 whose body is not a Messages response (a proxy's HTML page, truncated JSON).
            raise ModelError(f"model endpoint sent a malformed response: {exc}") from exc
        try:
            return _parse_reply(reply)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ModelError(f"model endpoint sent a malformed response: {exc}") from exc


ANSWER_TOOL = "hivebus_final_answer"
"""The tool an Anthropic model answers a sub-task with an output schema through."""
ANSWER_DESCRIPTION = (
    "Give your final answer to the sub-task by calling this tool once, with the answer as its "
    "input. Call it only when you are done."
)


def _parse_reply(reply: Any) -> ModelResponse:
    """Text, tool calls and usage from a Messages API response."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in reply.content:
        if block.type == "text":
            texts.append(block.text)
        elif block.type == "tool_use" and block.name == ANSWER_TOOL:
            texts.append(json.dumps(block.input))  # the structured answer, as its JSON text
        elif block.type == "tool_use":
            calls.append(ToolCall(id=block.id, name=block.name, args=block.input))
    usage = TurnUsage(
        input_tokens=reply.usage.input_tokens, output_tokens=reply.usage.output_tokens
    )
    model, stop = getattr(reply, "model", None), getattr(reply, "stop_reason", None)
    return ModelResponse(
        text="\n".join(texts) or None,
        tool_calls=calls,
        usage=usage,
        model=model if isinstance(model, str) else None,
        stop_reason=stop if isinstance(stop, str) else None,
    )
