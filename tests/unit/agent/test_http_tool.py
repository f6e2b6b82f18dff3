"""HTTP tools against a fake site on 127.0.0.1: allowlist, redirects, limits and error kinds."""

from __future__ import annotations

import http.client
import socket
import ssl
import string
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hivebus.agent.errors import ToolFailure
from hivebus.agent.tool import ToolContext
from hivebus.agent.toolbox import Toolbox
from hivebus.agent.tools.http import failure_for, host_allowed, http_get, http_request
from hivebus.contracts import Tier, ToolErrorKind, ToolResult

TOOLBOX = Toolbox([http_get, http_request], list(Tier))
READ_ONLY = Toolbox([http_get, http_request], [Tier.READ])
REFUSED = {ToolErrorKind.DENIED, ToolErrorKind.INVALID_ARGUMENTS}


@dataclass
class Received:
    """One request as the fake site saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeSite:
    """A small HTTP site that records every request; `release` lets `/slow` answer."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        """An absolute URL on this site."""
        return f"http://{host}:{self.port}{path}"

    @property
    def paths(self) -> list[str]:
        """The paths requested so far, in order."""
        return [item.path for item in self.received]


def reply_for(site: FakeSite, request: Received) -> tuple[int, bytes, dict[str, str]]:
    """The fake site's status, body and headers for one request, chosen by its first segment."""
    parts = urlsplit(request.path)
    name, _, arg = parts.path.strip("/").partition("/")
    to = parse_qs(parts.query).get("to", ["/"])[0]
    if name == "slow":
        site.release.wait(timeout=5)
    routes: dict[str, Callable[[], tuple[int, bytes, dict[str, str]]]] = {
        "ok": lambda: (200, b"hello", {}),
        "slow": lambda: (200, b"late", {}),
        "status": lambda: (
            int(arg),
            f"status {arg} says no".encode(),
            {"retry-after": "7"} if arg == "429" else {},
        ),
        "big": lambda: (200, b"a" * int(arg), {}),
        "cafe": lambda: (200, "éé".encode(), {"content-type": "text/plain; charset=utf-8"}),
        "echo": lambda: (
            201,
            request.body,
            {"content-type": request.headers.get("content-type", "none")},
        ),
        "redirect": lambda: (int(arg), b"", {"location": to}),
        "loop": lambda: (302, b"", {"location": "/loop"}),
    }
    return routes.get(name, lambda: (404, b"not here", {}))()


def handler_for(site: FakeSite) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to one fake site; it records every request."""

    class Handler(BaseHTTPRequestHandler):
        def handle_any(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            request = Received(self.command, self.path, headers, body)
            site.received.append(request)
            status, payload, extra = reply_for(site, request)
            self.send_response(status)
            for name, value in {"content-type": "text/plain", **extra}.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self.handle_any()

        def do_POST(self) -> None:
            self.handle_any()

        def do_PUT(self) -> None:
            self.handle_any()

        def do_PATCH(self) -> None:
            self.handle_any()

        def do_DELETE(self) -> None:
            self.handle_any()

        def log_message(self, *args: Any) -> None:
            """Keep test output quiet."""

    return Handler


@contextmanager
def running_site() -> Iterator[FakeSite]:
    """A fake site on a free port of 127.0.0.1, stopped (and `/slow` released) afterwards."""
    site = FakeSite()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(site))
    server.daemon_threads = True
    site.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield site
    finally:
        site.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def site() -> Iterator[FakeSite]:
    """A fake site for one test."""
    with running_site() as running:
        yield running


@pytest.fixture(scope="module")
def shared_site() -> Iterator[FakeSite]:
    """A fake site shared by the property test's examples."""
    with running_site() as running:
        yield running


def with_http(context: ToolContext, **http: Any) -> ToolContext:
    """The context with `tool_options.http` set to `http`."""
    return replace(context, options={"http": http})


@pytest.fixture
def allowed(tool_context: ToolContext, site: FakeSite) -> ToolContext:
    """A context whose allowlist is exactly the fake site's host and port."""
    return with_http(tool_context, allow_hosts=[f"127.0.0.1:{site.port}"], timeout_s=2)


def error_of(result: ToolResult) -> tuple[ToolErrorKind, str, str]:
    """The kind, message and suggestion of a failed result."""
    assert not result.ok, result
    assert result.error is not None
    assert result.error.suggestion
    return result.error.kind, result.error.message, result.error.suggestion


# --- ordinary use -----------------------------------------------------------------------------


async def test_get_returns_status_headers_and_body(allowed: ToolContext, site: FakeSite) -> None:
    """A GET on an allowed host returns status, selected headers, the body and no truncation."""
    result = await TOOLBOX.call("http_get", {"url": site.url("/ok")}, allowed)
    assert result.ok, result
    assert result.data == {
        "status": 200,
        "headers": {"content-type": "text/plain", "content-length": "5"},
        "body": "hello",
        "truncated": False,
        "url": site.url("/ok"),
    }
    assert [(r.method, r.path) for r in site.received] == [("GET", "/ok")]


async def test_model_headers_arrive_and_host_cannot_be_set(
    allowed: ToolContext, site: FakeSite
) -> None:
    """A model's header reaches the server, while a `Host` header is refused before sending."""
    sent = await TOOLBOX.call(
        "http_get", {"url": site.url("/ok"), "headers": {"X-Probe": "1"}}, allowed
    )
    assert sent.ok
    assert site.received[0].headers["x-probe"] == "1"
    hijack = await TOOLBOX.call(
        "http_get", {"url": site.url("/ok"), "headers": {"Host": "evil.test"}}, allowed
    )
    assert error_of(hijack)[0] is ToolErrorKind.INVALID_ARGUMENTS
    assert len(site.received) == 1


async def test_non_ascii_in_the_path_is_percent_encoded(
    allowed: ToolContext, site: FakeSite
) -> None:
    """Non-ASCII characters in a URL are sent percent-encoded as UTF-8."""
    result = await TOOLBOX.call("http_get", {"url": site.url("/ok?q=café")}, allowed)
    assert result.ok
    assert site.paths == ["/ok?q=caf%C3%A9"]


async def test_post_with_a_body_arrives_with_an_idempotency_key(
    allowed: ToolContext, site: FakeSite
) -> None:
    """A POST carries its body and content type, plus the call's idempotency key."""
    args = {
        "method": "post",
        "url": site.url("/echo"),
        "body": '{"a": 1}',
        "headers": {"Content-Type": "application/json"},
    }
    result = await TOOLBOX.call("http_request", args, allowed)
    assert result.ok, result
    assert result.data["status"] == 201
    assert result.data["body"] == '{"a": 1}'
    [request] = site.received
    assert (request.method, request.body) == ("POST", b'{"a": 1}')
    assert request.headers["content-type"] == "application/json"
    assert request.headers["idempotency-key"] == allowed.idempotency_key


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
async def test_other_write_methods_are_sent(
    allowed: ToolContext, site: FakeSite, method: str
) -> None:
    """PUT, PATCH and DELETE go out as themselves; a text body defaults to text/plain."""
    args = {"method": method, "url": site.url("/echo"), "body": "x"}
    result = await TOOLBOX.call("http_request", args, allowed)
    assert result.ok, result
    assert site.received[0].method == method
    assert site.received[0].headers["content-type"] == "text/plain; charset=utf-8"


# --- methods and tiers ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "head", " Get "])
async def test_reads_through_http_request_are_refused(
    allowed: ToolContext, site: FakeSite, method: str
) -> None:
    """GET and HEAD through `http_request` are refused with a pointer to `http_get`."""
    result = await TOOLBOX.call("http_request", {"method": method, "url": site.url("/ok")}, allowed)
    kind, _, suggestion = error_of(result)
    assert kind is ToolErrorKind.INVALID_ARGUMENTS
    assert "http_get" in suggestion
    assert site.received == []


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "OPTIONS", "", "PO ST"])
async def test_unknown_methods_are_invalid(
    allowed: ToolContext, site: FakeSite, method: str
) -> None:
    """Any method other than POST, PUT, PATCH or DELETE is `invalid_arguments`."""
    result = await TOOLBOX.call("http_request", {"method": method, "url": site.url("/ok")}, allowed)
    kind, _, suggestion = error_of(result)
    assert kind is ToolErrorKind.INVALID_ARGUMENTS
    assert "POST" in suggestion
    assert site.received == []


async def test_a_read_only_role_is_denied_http_request(
    allowed: ToolContext, site: FakeSite
) -> None:
    """The toolbox denies `http_request` to a role without `write_risky`, but allows `http_get`."""
    write = await READ_ONLY.call(
        "http_request", {"method": "POST", "url": site.url("/echo")}, allowed
    )
    assert error_of(write)[0] is ToolErrorKind.DENIED
    assert site.received == []
    read = await READ_ONLY.call("http_get", {"url": site.url("/ok")}, allowed)
    assert read.ok


# --- allowlist --------------------------------------------------------------------------------


async def test_a_host_off_the_allowlist_is_denied_and_not_contacted(
    tool_context: ToolContext, site: FakeSite
) -> None:
    """A URL whose host is not allowed is `denied`, names the allowed hosts, and sends nothing."""
    context = with_http(tool_context, allow_hosts=["api.example.com", "*.example.org"])
    result = await TOOLBOX.call("http_get", {"url": site.url("/ok")}, context)
    kind, _, suggestion = error_of(result)
    assert kind is ToolErrorKind.DENIED
    assert "api.example.com" in suggestion
    assert "*.example.org" in suggestion
    assert site.received == []


async def test_the_port_of_an_allowlist_entry_must_match(
    tool_context: ToolContext, site: FakeSite
) -> None:
    """An entry with a port allows only that port; an entry without one allows any port."""
    other = with_http(tool_context, allow_hosts=[f"127.0.0.1:{site.port + 1}"])
    denied = await TOOLBOX.call("http_get", {"url": site.url("/ok")}, other)
    assert error_of(denied)[0] is ToolErrorKind.DENIED
    any_port = with_http(tool_context, allow_hosts=["127.0.0.1"])
    assert (await TOOLBOX.call("http_get", {"url": site.url("/ok")}, any_port)).ok
    assert site.paths == ["/ok"]


@pytest.mark.parametrize("options", [{}, {"http": {}}, {"http": {"allow_hosts": []}}])
async def test_an_empty_or_missing_allowlist_denies_everything(
    tool_context: ToolContext, site: FakeSite, options: dict[str, Any]
) -> None:
    """Without allowed hosts every request is `denied` and nothing is sent."""
    context = replace(tool_context, options=options)
    for name, args in [
        ("http_get", {"url": site.url("/ok")}),
        ("http_request", {"method": "POST", "url": site.url("/echo")}),
    ]:
        result = await TOOLBOX.call(name, args, context)
        assert error_of(result)[0] is ToolErrorKind.DENIED
    assert site.received == []


@pytest.mark.parametrize(
    "http_options",
    [{"allow_hosts": "127.0.0.1"}, {"allow_hosts": [1]}, {"max_bytes": 0}, {"timeout_s": "1"}],
)
async def test_malformed_options_are_a_permanent_error(
    tool_context: ToolContext, site: FakeSite, http_options: dict[str, Any]
) -> None:
    """Malformed `tool_options.http` is a permanent error that sends nothing."""
    context = replace(tool_context, options={"http": http_options})
    result = await TOOLBOX.call("http_get", {"url": site.url("/ok")}, context)
    kind, message, _ = error_of(result)
    assert kind is ToolErrorKind.PERMANENT
    assert "misconfigured" in message
    assert site.received == []


@pytest.mark.parametrize(
    ("host", "port", "patterns", "expected"),
    [
        ("a.example.com", 443, ["*.example.com"], True),
        ("a.b.example.com", 80, ["*.example.com"], True),
        ("A.Example.COM", 80, ["*.EXAMPLE.com"], True),
        ("example.com", 80, ["*.example.com"], False),
        ("badexample.com", 80, ["*.example.com"], False),
        ("example.com.evil.org", 80, ["example.com", "*.example.com"], False),
        ("EXAMPLE.com", 80, ["example.COM"], True),
        ("example.com.", 80, ["example.com"], True),
        ("127.0.0.1", 12345, ["127.0.0.1"], True),
        ("127.0.0.1", 8080, ["127.0.0.1:8080"], True),
        ("127.0.0.1", 8081, ["127.0.0.1:8080"], False),
        ("example.com", 443, ["example.com:443"], True),
        ("a.example.com", 8443, ["*.example.com:8443"], True),
        ("a.example.com", 443, ["*.example.com:8443"], False),
        ("::1", 8080, ["[::1]:8080"], True),
        ("bücher.de", 80, ["xn--bcher-kva.de"], True),
        ("anything.com", 80, ["*", "*.*", "*com"], False),
        ("x.com", 80, ["x.com:port", "user@x.com", "x.com/path", "[x.com"], False),
        ("x.com", 80, [], False),
    ],
)
def test_host_matching(*, host: str, port: int, patterns: list[str], expected: bool) -> None:
    """Entries match case-insensitively; `*.` matches subdomains only; a port must be equal."""
    assert host_allowed(host, port, patterns) is expected


# --- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x",
        "gopher://127.0.0.1:{port}/ok",
        "javascript:alert(1)",
        "/ok",
        "127.0.0.1/ok",
        "//127.0.0.1:{port}/ok",
        "http:///ok",
        "http://user:pw@127.0.0.1:{port}/ok",
        "http://127.0.0.1:{port}@127.0.0.1:{port}/ok",
        "http://127.0.0.1:{port}/a b",
        "http://127.0.0.1:{port}/ok\r\nX-Injected: 1",
        "http://127.0.0.1:99999/ok",
        "http://%31%32%37.0.0.1:{port}/ok",
        "http://[::1/ok",
        "http://*.127.0.0.1:{port}/ok",
        "",
    ],
)
async def test_invalid_urls_are_invalid_arguments(
    allowed: ToolContext, site: FakeSite, url: str
) -> None:
    """Other schemes, relative URLs, userinfo, spaces and bad ports are `invalid_arguments`."""
    result = await TOOLBOX.call("http_get", {"url": url.format(port=site.port)}, allowed)
    assert error_of(result)[0] is ToolErrorKind.INVALID_ARGUMENTS
    assert site.received == []


# --- status codes and network failures --------------------------------------------------------


async def test_404_is_permanent_with_the_status_and_an_excerpt(
    allowed: ToolContext, site: FakeSite
) -> None:
    """A 404 is a permanent error whose message carries the status and the start of the body."""
    result = await TOOLBOX.call("http_get", {"url": site.url("/status/404")}, allowed)
    kind, message, _ = error_of(result)
    assert kind is ToolErrorKind.PERMANENT
    assert "404" in message
    assert "status 404 says no" in message


@pytest.mark.parametrize(("code", "when"), [(500, "later"), (503, "later"), (429, "7 seconds")])
async def test_429_and_5xx_are_transient(
    allowed: ToolContext, site: FakeSite, code: int, when: str
) -> None:
    """429 and 5xx are transient errors that suggest trying again (after Retry-After if given)."""
    result = await TOOLBOX.call("http_get", {"url": site.url(f"/status/{code}")}, allowed)
    kind, message, suggestion = error_of(result)
    assert kind is ToolErrorKind.TRANSIENT
    assert str(code) in message
    assert when in suggestion


async def test_a_refused_connection_is_transient(tool_context: ToolContext) -> None:
    """A port where nothing listens gives a transient error."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))  # bound but not listening: connections are refused
        port = probe.getsockname()[1]
        context = with_http(tool_context, allow_hosts=["127.0.0.1"])
        result = await TOOLBOX.call("http_get", {"url": f"http://127.0.0.1:{port}/"}, context)
    kind, _, suggestion = error_of(result)
    assert kind is ToolErrorKind.TRANSIENT
    assert "try again" in suggestion


async def test_a_slow_answer_beyond_timeout_s_is_transient(
    tool_context: ToolContext, site: FakeSite
) -> None:
    """An answer slower than the configured `timeout_s` is a transient "timed out" error."""
    context = with_http(tool_context, allow_hosts=["127.0.0.1"], timeout_s=0.2)
    result = await TOOLBOX.call("http_get", {"url": site.url("/slow")}, context)
    kind, message, _ = error_of(result)
    assert kind is ToolErrorKind.TRANSIENT
    assert "timed out" in message


async def test_a_slow_answer_beyond_the_call_timeout_is_a_timeout(
    tool_context: ToolContext, site: FakeSite
) -> None:
    """When the toolbox's limit is shorter than `timeout_s`, the call ends as `timeout`."""
    context = with_http(tool_context, allow_hosts=["127.0.0.1"], timeout_s=5)
    result = await TOOLBOX.call("http_get", {"url": site.url("/slow")}, context, timeout_s=0.2)
    assert error_of(result)[0] is ToolErrorKind.TIMEOUT


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), ToolErrorKind.TRANSIENT),
        (ConnectionResetError("reset"), ToolErrorKind.TRANSIENT),
        (http.client.RemoteDisconnected("closed"), ToolErrorKind.TRANSIENT),
        (http.client.IncompleteRead(b"x", 10), ToolErrorKind.TRANSIENT),
        (TimeoutError("timed out"), ToolErrorKind.TRANSIENT),
        (OSError(113, "No route to host"), ToolErrorKind.TRANSIENT),
        (ssl.SSLCertVerificationError("certificate verify failed"), ToolErrorKind.PERMANENT),
        (http.client.BadStatusLine("SSH-2.0"), ToolErrorKind.PERMANENT),
    ],
)
def test_network_failures_are_classified(
    exc: OSError | http.client.HTTPException, kind: ToolErrorKind
) -> None:
    """DNS, connection and timeout failures are transient; TLS and non-HTTP answers are not."""
    failure = failure_for(exc, "http://x.test/")
    assert isinstance(failure, ToolFailure)
    assert failure.kind is kind
    assert "x.test" in str(failure)


# --- redirects --------------------------------------------------------------------------------


async def test_a_redirect_to_an_allowed_path_is_followed(
    allowed: ToolContext, site: FakeSite
) -> None:
    """A redirect within the allowed host is followed and the final URL is reported."""
    result = await TOOLBOX.call("http_get", {"url": site.url("/redirect/302?to=/ok")}, allowed)
    assert result.ok, result
    assert (result.data["status"], result.data["body"]) == (200, "hello")
    assert result.data["url"] == site.url("/ok")
    assert site.paths == ["/redirect/302?to=/ok", "/ok"]


@pytest.mark.parametrize(
    ("code", "sent", "method", "body"),
    [(307, "POST", "POST", b"x"), (308, "PUT", "PUT", b"x"), (303, "POST", "GET", b"")],
)
async def test_redirected_writes_keep_or_drop_their_method(
    allowed: ToolContext, site: FakeSite, *, code: int, sent: str, method: str, body: bytes
) -> None:
    """307 and 308 resend the method and body; 303 turns a write into a bodiless GET."""
    args = {"method": sent, "url": site.url(f"/redirect/{code}?to=/echo"), "body": "x"}
    result = await TOOLBOX.call("http_request", args, allowed)
    assert result.ok, result
    final = site.received[-1]
    assert (final.path, final.method, final.body) == ("/echo", method, body)


@pytest.mark.parametrize(
    "target",
    [
        "http://elsewhere.test/x",
        "http://127.0.0.1:{other}/ok",
        "file:///etc/passwd",
        "http://user@127.0.0.1:{port}/ok",
        "http://[::1/ok",
    ],
)
async def test_a_redirect_off_the_allowlist_is_denied(
    allowed: ToolContext, site: FakeSite, target: str
) -> None:
    """A redirect to a host, port or scheme that is not allowed is `denied` and not followed."""
    to = target.format(port=site.port, other=site.port + 1)
    url = site.url("/redirect/302?" + urlencode({"to": to}))
    result = await TOOLBOX.call("http_get", {"url": url}, allowed)
    kind, message, _ = error_of(result)
    assert kind is ToolErrorKind.DENIED
    assert "redirects" in message
    assert len(site.received) == 1


async def test_cross_host_redirects_drop_credentials(
    tool_context: ToolContext, site: FakeSite
) -> None:
    """A redirect to another allowed host does not carry the Authorization header along."""
    context = with_http(tool_context, allow_hosts=["127.0.0.1", "localhost"])
    url = site.url(f"/redirect/302?to={site.url('/ok', host='localhost')}")
    result = await TOOLBOX.call(
        "http_get", {"url": url, "headers": {"Authorization": "Bearer t"}}, context
    )
    assert result.ok, result
    first, second = site.received
    assert first.headers["authorization"] == "Bearer t"
    assert "authorization" not in second.headers


async def test_more_than_three_redirects_stop(allowed: ToolContext, site: FakeSite) -> None:
    """A redirect loop stops after three redirects with a permanent error."""
    result = await TOOLBOX.call("http_get", {"url": site.url("/loop")}, allowed)
    kind, message, _ = error_of(result)
    assert kind is ToolErrorKind.PERMANENT
    assert "more than 3" in message
    assert site.paths == ["/loop"] * 4


# --- body limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "truncated"), [(999, False), (1000, False), (5000, True)])
async def test_bodies_are_cut_at_max_bytes(
    tool_context: ToolContext,
    site: FakeSite,
    *,
    size: int,
    truncated: bool,
) -> None:
    """A body longer than `max_bytes` is cut there and flagged; one of exactly that size is not."""
    context = with_http(tool_context, allow_hosts=["127.0.0.1"], max_bytes=1000)
    result = await TOOLBOX.call("http_get", {"url": site.url(f"/big/{size}")}, context)
    assert result.ok, result
    assert len(result.data["body"]) == min(size, 1000)
    assert result.data["truncated"] is truncated
    assert result.data["headers"]["content-length"] == str(size)


async def test_a_character_cut_by_truncation_is_dropped(
    tool_context: ToolContext, site: FakeSite
) -> None:
    """Cutting inside a multi-byte character drops its first half instead of garbling it."""
    context = with_http(tool_context, allow_hosts=["127.0.0.1"], max_bytes=3)
    result = await TOOLBOX.call("http_get", {"url": site.url("/cafe")}, context)
    assert (result.data["body"], result.data["truncated"]) == ("é", True)


# --- property: hosts off the allowlist are never contacted -----------------------------------

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
RANDOM_HOST = (
    st.lists(LABEL, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda h: h != "allowed.test" and not h.endswith(".allowed.test"))
)
TRICKY_HOST = st.sampled_from(
    [
        "127.0.0.1",
        "localhost",
        "LocalHost",
        "127.0.0.1.",
        "[::1]",
        "2130706433",
        "0x7f.1",
        "127.1",
        "allowed.test.evil",
        "xallowed.test",
        "allowed-test",
        "allowed.test@127.0.0.1",
        "allowed.test:1@127.0.0.1",
        "%61llowed.test",
        "allowed.test\\@127.0.0.1",
    ]
)
TRICKY_TAIL = st.sampled_from(
    ["", "/", "/ok", "#@allowed.test/", "?@allowed.test", "/@allowed.test"]
)
PATH = st.text(alphabet=string.ascii_letters + string.digits + "/._-~%", max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    scheme=st.sampled_from(["http", "https", "HTTP"]),
    host=TRICKY_HOST | RANDOM_HOST,
    port=st.sampled_from(["site", "none", "other"]),
    tail=TRICKY_TAIL | PATH.map(lambda p: "/" + p),
    write=st.booleans(),
)
async def test_hosts_off_the_allowlist_never_receive_a_request(
    shared_site: FakeSite,
    *,
    scheme: str,
    host: str,
    port: str,
    tail: str,
    write: bool,
) -> None:
    """For any URL whose host is not allowed, the call is refused and the site receives nothing."""
    allowed_port = shared_site.port + 1
    allow_hosts = ["allowed.test", "*.allowed.test", f"127.0.0.1:{allowed_port}"]
    context = ToolContext(
        workspace=Path(),
        task_id="task-1",
        subtask_id="sub-1",
        run_id="run1",
        step=1,
        idempotency_key="run1:1:call_1",
        options={"http": {"allow_hosts": allow_hosts, "timeout_s": 1}},
    )
    suffix = {"site": f":{shared_site.port}", "none": "", "other": f":{allowed_port + 1}"}[port]
    url = f"{scheme}://{host}{suffix}{tail}"
    before = len(shared_site.received)
    if write:
        result = await TOOLBOX.call("http_request", {"method": "POST", "url": url}, context)
    else:
        result = await TOOLBOX.call("http_get", {"url": url}, context)
    assert not result.ok, url
    assert result.error is not None
    assert result.error.kind in REFUSED, (url, result.error)
    assert len(shared_site.received) == before
