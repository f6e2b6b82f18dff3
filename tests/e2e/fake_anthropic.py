"""A fake Anthropic Messages API on 127.0.0.1: it plays queued replies and records requests.

    fake = FakeAnthropic(then=error(529))      # what to answer once the queue is empty
    fake.queue(error(429, retry_after="0.2"), text("hello", 12, 3))
    with fake: ...                             # serving on fake.url until the block ends

Only `POST /v1/messages` is served; anything else is a 404, so a wrong path shows up as a
failed test rather than a silent success.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

_ERROR_TYPES = {
    400: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: status, JSON body, extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    """How long to wait before answering (the request stays in flight meanwhile)."""


@dataclass(frozen=True)
class Seen:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def _message(content: list[dict[str, Any]], stop: str, usage: tuple[int, int]) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }


def text(
    answer: str, input_tokens: int = 10, output_tokens: int = 5, *, delay_s: float = 0.0
) -> Reply:
    """A final text answer with this usage, sent `delay_s` after the request."""
    body = _message([{"type": "text", "text": answer}], "end_turn", (input_tokens, output_tokens))
    return Reply(200, body, delay_s=delay_s)


def tool_use(
    name: str,
    args: dict[str, Any],
    *,
    call_id: str = "toolu_01",
    input_tokens: int = 10,
    output_tokens: int = 5,
) -> Reply:
    """A turn that asks for one tool call."""
    block = {"type": "tool_use", "id": call_id, "name": name, "input": args}
    return Reply(200, _message([block], "tool_use", (input_tokens, output_tokens)))


def error(status: int, *, retry_after: str | None = None) -> Reply:
    """An API error in the Messages API's error shape, optionally with `retry-after`."""
    kind = _ERROR_TYPES.get(status, "api_error")
    body = {"type": "error", "error": {"type": kind, "message": f"fake {kind}"}}
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return Reply(status, body, headers)


class FakeAnthropic:
    """The server, in a thread; `queue` replies, read `requests` after the run."""

    def __init__(self, then: Reply | None = None) -> None:
        """Answer `then` once the queue is empty (by default a 400 saying so)."""
        self.then = then or Reply(
            400,
            {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "fake: no reply queued"},
            },
        )
        self.requests: list[Seen] = []
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL to give the SDK (`anthropic_base_url`)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def queue(self, *replies: Reply) -> None:
        """Answer the next requests with these replies, in order."""
        with self._lock:
            self._replies.extend(replies)

    def _next(self, seen: Seen) -> Reply:
        with self._lock:
            self.requests.append(seen)
            if seen.path != "/v1/messages":
                return Reply(404, {"type": "error", "error": {"type": "not_found_error"}})
            return self._replies.popleft() if self._replies else self.then

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                seen = Seen(
                    path=self.path.split("?", 1)[0],
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=json.loads(raw or b"{}"),
                )
                reply = fake._next(seen)
                if reply.delay_s:
                    time.sleep(reply.delay_s)  # this request's own thread: others go on
                data = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                """Keep the test output quiet."""

        return Handler

    def __enter__(self) -> Self:
        """Start serving."""
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
