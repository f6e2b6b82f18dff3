"""`AnthropicModel` against a fake Anthropic-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import pytest

from hivebus.agent.errors import ModelError
from hivebus.agent.models.anthropic import AnthropicModel, classify
from hivebus.agent.models.base import (
    Message,
    ModelRequest,
    ToolCall,
    ToolOutcome,
    ToolSpec,
    TurnUsage,
)
from hivebus.contracts import ToolErrorKind, ToolResult

ROUTE = "anthropic:claude-test"
MODEL_NAME = "claude-test"
LOOKUP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"key": {"type": "string"}},
    "required": ["key"],
    "additionalProperties": False,
}


@dataclass
class Received:
    """One request as the fake server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    """What the fake server answers: status, raw body, content type, or no answer at all."""

    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    hang: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeAnthropic:
    """A tiny Messages API stand-in: records each request and answers with the canned reply."""

    reply: Reply = field(default_factory=Reply)
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def answer_json(self, payload: Any, status: int = 200) -> None:
        """Answer the next requests with `payload` as JSON."""
        self.reply = Reply(status=status, body=json.dumps(payload).encode())

    @property
    def base_url(self) -> str:
        """The URL to hand to the SDK."""
        return f"http://127.0.0.1:{self.port}"


def handler_for(fake: FakeAnthropic) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to one fake server's state."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            fake.received.append(
                Received(
                    method="POST",
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=json.loads(raw or b"null"),
                )
            )
            reply = fake.reply
            if reply.hang:
                fake.release.wait(timeout=10)
                return
            self.send_response(reply.status)
            self.send_header("content-type", reply.content_type)
            self.send_header("content-length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, *args: Any) -> None:
            """Keep test output quiet."""

    return Handler


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sure the SDK talks to 127.0.0.1 directly, whatever proxies the environment sets."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    """A fake Anthropic endpoint on a free local port, stopped after the test."""
    state = FakeAnthropic()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(state))
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def model_for(fake: FakeAnthropic, timeout_s: float = 5) -> AnthropicModel:
    """The adapter under test, pointed at the fake, with the SDK's own retries off."""
    return AnthropicModel(
        ROUTE,
        MODEL_NAME,
        api_key="test-key",
        base_url=fake.base_url,
        max_retries=0,
        timeout_s=timeout_s,
    )


def message(content: list[dict[str, Any]], *, usage: dict[str, int] | None = None) -> Any:
    """A Messages API response body."""
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": MODEL_NAME,
        "content": content,
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 12, "output_tokens": 7},
    }


def error_body(status: int) -> Any:
    """An error body in the API's shape."""
    return {"type": "error", "error": {"type": f"status_{status}", "message": f"canned {status}"}}


def hello() -> ModelRequest:
    """The smallest request: one user turn."""
    return ModelRequest(system="Be brief.", messages=[Message(role="user", text="hello")])


# --- answers ----------------------------------------------------------------------------------


async def test_tool_use_response_becomes_tool_calls(fake: FakeAnthropic) -> None:
    """`tool_use` blocks become tool calls with their id, name and input, next to the text."""
    fake.answer_json(
        message(
            [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_01", "name": "lookup", "input": {"key": "a"}},
                {"type": "tool_use", "id": "toolu_02", "name": "lookup", "input": {"key": "b"}},
            ]
        )
    )
    response = await model_for(fake).complete(hello())
    assert response.text == "Let me look."
    assert response.tool_calls == [
        ToolCall(id="toolu_01", name="lookup", args={"key": "a"}),
        ToolCall(id="toolu_02", name="lookup", args={"key": "b"}),
    ]
    assert response.usage == TurnUsage(input_tokens=12, output_tokens=7)


async def test_text_response_reads_text_and_usage(fake: FakeAnthropic) -> None:
    """Text blocks are joined into the answer and usage is read from the response."""
    fake.answer_json(
        message(
            [{"type": "text", "text": "First part."}, {"type": "text", "text": "Second part."}],
            usage={"input_tokens": 321, "output_tokens": 45},
        )
    )
    response = await model_for(fake).complete(hello())
    assert response.text == "First part.\nSecond part."
    assert response.tool_calls == []
    assert response.usage == TurnUsage(input_tokens=321, output_tokens=45)


async def test_request_is_sent_in_anthropic_format(fake: FakeAnthropic) -> None:
    """System, tools, messages and tool results after a tool turn go out as Messages API blocks."""
    fake.answer_json(message([{"type": "text", "text": "done"}]))
    ok = ToolResult.success("value-of-a")
    failed = ToolResult.failure(ToolErrorKind.UNKNOWN_TOOL, "no tool 'nope'", "use lookup")
    request = ModelRequest(
        system="Be brief.",
        messages=[
            Message(role="user", text="Find a."),
            Message(
                role="assistant",
                text="Looking.",
                tool_calls=[
                    ToolCall(id="toolu_01", name="lookup", args={"key": "a"}),
                    ToolCall(id="toolu_02", name="nope", args=["not", "an", "object"]),
                ],
            ),
            Message(
                role="tool",
                tool_results=[
                    ToolOutcome(call_id="toolu_01", name="lookup", result=ok),
                    ToolOutcome(call_id="toolu_02", name="nope", result=failed),
                ],
            ),
        ],
        tools=[ToolSpec(name="lookup", description="Look up a key.", input_schema=LOOKUP_SCHEMA)],
        max_output_tokens=256,
    )
    await model_for(fake).complete(request)

    [sent] = fake.received
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    # Older SDKs send `x-api-key`; newer ones `Authorization: Bearer`. Either must carry the key.
    assert "test-key" in {
        sent.headers.get("x-api-key"),
        sent.headers.get("authorization", "").removeprefix("Bearer "),
    }
    body = sent.body
    assert body["model"] == MODEL_NAME
    assert body["system"] == "Be brief."
    assert body["max_tokens"] == 256
    assert body["tools"] == [
        {"name": "lookup", "description": "Look up a key.", "input_schema": LOOKUP_SCHEMA}
    ]
    user, assistant, results = body["messages"]
    assert user == {"role": "user", "content": "Find a."}
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": "toolu_01", "name": "lookup", "input": {"key": "a"}},
            {"type": "tool_use", "id": "toolu_02", "name": "nope", "input": {}},
        ],
    }
    assert results["role"] == "user"
    first, second = results["content"]
    assert (first["type"], first["tool_use_id"], first["is_error"]) == (
        "tool_result",
        "toolu_01",
        False,
    )
    assert json.loads(first["content"]) == {"ok": True, "data": "value-of-a", "error": None}
    assert (second["type"], second["tool_use_id"], second["is_error"]) == (
        "tool_result",
        "toolu_02",
        True,
    )
    assert json.loads(second["content"])["error"]["kind"] == "unknown_tool"


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(429, True), (500, True), (503, True), (529, True), (400, False), (401, False), (404, False)],
)
async def test_http_errors_become_model_errors_that_know_if_a_retry_helps(
    fake: FakeAnthropic, status: int, *, retryable: bool
) -> None:
    """429 and 5xx are retryable `ModelError`s, other 4xx are not; the SDK does not retry here."""
    fake.answer_json(error_body(status), status=status)
    with pytest.raises(ModelError) as caught:
        await model_for(fake).complete(hello())
    assert caught.value.retryable is retryable
    assert f"answered {status}" in str(caught.value)
    assert len(fake.received) == 1


async def test_retry_after_header_is_passed_up_on_a_429(fake: FakeAnthropic) -> None:
    """A 429's `retry-after` reaches our retry layer as `retry_after_s`; the SDK does not retry."""
    fake.reply = Reply(
        status=429, body=json.dumps(error_body(429)).encode(), headers={"retry-after": "1.5"}
    )
    with pytest.raises(ModelError) as caught:
        await model_for(fake).complete(hello())
    assert caught.value.retryable
    assert caught.value.retry_after_s == 1.5
    assert len(fake.received) == 1


async def test_unreachable_endpoint_is_a_retryable_model_error() -> None:
    """A refused connection is a retryable `ModelError`."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    model = AnthropicModel(
        ROUTE, MODEL_NAME, api_key="k", base_url=f"http://127.0.0.1:{port}", max_retries=0
    )
    with pytest.raises(ModelError, match="unreachable") as caught:
        await model.complete(hello())
    assert caught.value.retryable


async def test_endpoint_that_never_answers_is_a_retryable_timeout(fake: FakeAnthropic) -> None:
    """A request that outlives the client timeout is a retryable `ModelError`."""
    fake.reply = Reply(hang=True)
    with pytest.raises(ModelError, match="APITimeoutError") as caught:
        await model_for(fake, timeout_s=0.2).complete(hello())
    assert caught.value.retryable
    assert len(fake.received) == 1


@pytest.mark.parametrize(
    "reply",
    [
        Reply(body=b"not json at all"),
        Reply(body=b""),
        Reply(body=b"<html>gateway</html>", content_type="text/html"),
        Reply(body=b'{"content": "oops"}'),
        Reply(body=b"{}"),
        Reply(body=json.dumps({**message([]), "usage": None}).encode()),
        Reply(body=json.dumps(message([{"type": "tool_use", "name": "lookup"}])).encode()),
    ],
    ids=["not-json", "empty", "html", "content-not-a-list", "empty-object", "no-usage", "no-id"],
)
async def test_malformed_body_is_a_model_error(fake: FakeAnthropic, reply: Reply) -> None:
    """A successful status with a body that is not a Messages API response is a `ModelError`."""
    fake.reply = reply
    with pytest.raises(ModelError):
        await model_for(fake).complete(hello())


def test_classify_unknown_sdk_errors_as_not_retryable() -> None:
    """An SDK error that is neither a connection nor a status error is not retried."""
    error = classify(anthropic.AnthropicError("something odd"))
    assert not error.retryable
    assert "model call failed: AnthropicError: something odd" in str(error)
