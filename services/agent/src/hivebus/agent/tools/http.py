"""HTTP tools: `http_get` reads a URL; `http_request` sends POST, PUT, PATCH or DELETE.

Only hosts named in `tool_options.http.allow_hosts` are reachable, and an empty list reaches
none. A request goes straight to the URL's own host (never through a proxy), a redirect is
followed only to an allowed host, and the whole call, redirects included, ends within
`timeout_s`, before the tool's own timeout, so the worker thread never outlives it for long:

    tool_options:
      http:
        allow_hosts: [api.example.com, "*.example.org", "127.0.0.1:8080"]
        max_bytes: 262144   # response bodies are cut here (default 256 KiB)
        timeout_s: 10       # the whole call, redirects included (default 10 s)

The module is longer than most on purpose: it is the one path a request takes out of the
process, from the host policy to the reply, kept in one file so it can be audited whole.
"""

from __future__ import annotations

import codecs
import http.client
import re
import socket
import ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from hivebus.agent.errors import ToolFailure
from hivebus.agent.tool import ToolContext, tool
from hivebus.contracts import ToolErrorKind

TOOL_TIMEOUT_S = 15.0
DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = TOOL_TIMEOUT_S - 1.0  # a larger `timeout_s` is cut so the socket gives up first
DEFAULT_MAX_BYTES = 256 * 1024
MAX_REQUEST_BYTES = 1024 * 1024
MAX_URL_CHARS = 8192
MAX_REDIRECTS = 3
READ_CHUNK = 64 * 1024
EXCERPT_CHARS = 200
USER_AGENT = "hivebus-agent"
WRITE_METHODS = ("DELETE", "PATCH", "POST", "PUT")
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MOVED = frozenset({301, 302})  # these turn a POST into a GET, as browsers do
REPORTED_HEADERS = ("content-type", "content-length")
# Host would aim the request at another virtual host; the others must match what is sent.
REFUSED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HOST = re.compile(r"[a-z0-9_.-]+|[0-9a-f:.]+")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _invalid(message: str, suggestion: str) -> ToolFailure:
    return ToolFailure(message, suggestion, ToolErrorKind.INVALID_ARGUMENTS)


def _misconfigured(problem: str) -> ToolFailure:
    return ToolFailure(
        f"the http tools are misconfigured: {problem}",
        "continue without this request; a person must fix tool_options.http",
    )


@dataclass(frozen=True)
class HttpOptions:
    """The `tool_options.http` settings of the configuration, checked."""

    allow_hosts: tuple[str, ...] = ()
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> HttpOptions:
        """Read and check `options["http"]`; a missing section allows no host at all."""
        raw = options.get("http") or {}
        if not isinstance(raw, Mapping):
            raise _misconfigured("`http` must be a mapping")
        hosts = raw.get("allow_hosts") or []
        if isinstance(hosts, str) or not isinstance(hosts, Sequence):
            raise _misconfigured("`allow_hosts` must be a list of host names")
        if not all(isinstance(host, str) for host in hosts):
            raise _misconfigured("`allow_hosts` must hold strings only")
        max_bytes = raw.get("max_bytes", DEFAULT_MAX_BYTES)
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise _misconfigured("`max_bytes` must be a positive integer")
        timeout_s = raw.get("timeout_s", DEFAULT_TIMEOUT_S)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
            raise _misconfigured("`timeout_s` must be a positive number")
        return cls(tuple(hosts), max_bytes, min(float(timeout_s), MAX_TIMEOUT_S))


def _canonical_host(host: str) -> str:
    """Lower case, no trailing dot, international names in their ASCII (IDNA) form."""
    host = host.lower().rstrip(".")
    return host if host.isascii() else host.encode("idna").decode("ascii")


def _pattern(pattern: str) -> tuple[str, int | None] | None:
    """Split an allowlist entry into host and optional port; None when it is not valid."""
    try:
        parts = urlsplit("//" + pattern.strip())
        port = parts.port
        host = _canonical_host(parts.hostname or "")
    except (ValueError, UnicodeError):
        return None
    bare = host.removeprefix("*.")
    if "@" in parts.netloc or parts.path or not bare or not _HOST.fullmatch(bare):
        return None
    return host, port


def host_allowed(host: str, port: int, allow_hosts: Iterable[str]) -> bool:
    """Whether `host` on `port` matches an entry: `a.com`, `*.a.com` (subdomains), `a.com:8080`."""
    host = _canonical_host(host)
    for entry in allow_hosts:
        parsed = _pattern(entry)
        if parsed is None or (parsed[1] is not None and parsed[1] != port):
            continue
        want = parsed[0]
        if want.startswith("*."):
            if host.endswith(want[1:]) and len(host) > len(want) - 1:
                return True
        elif host == want:
            return True
    return False


@dataclass(frozen=True)
class Target:
    """A checked absolute http(s) URL: where to connect and what to ask for."""

    scheme: str
    host: str
    port: int
    path: str

    @property
    def url(self) -> str:
        """The URL as it is requested (fragment dropped, non-ASCII percent-encoded)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        netloc = host if self.port == default else f"{host}:{self.port}"
        return f"{self.scheme}://{netloc}{self.path}"


def parse_url(url: str) -> Target:
    """Check a URL: absolute, http or https, no user:password@; raises `ToolFailure` if not."""
    example = "give a full URL such as https://example.com/path"
    if len(url) > MAX_URL_CHARS:
        raise _invalid(f"the URL is longer than {MAX_URL_CHARS} characters", "use a shorter URL")
    if _CONTROL.search(url):
        raise _invalid("the URL contains spaces or control characters", "percent-encode them")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unclosed "[" of an IPv6 address, for one
        raise _invalid(f"{url!r} is not a valid URL: {exc}", example) from exc
    if parts.scheme and parts.scheme not in {"http", "https"}:
        raise _invalid(f"the scheme {parts.scheme!r} is not supported", "use an http(s) URL")
    if not parts.scheme or not parts.netloc:
        raise _invalid(f"{url!r} is not an absolute URL", example)
    if "@" in parts.netloc:
        raise _invalid("URLs may not carry user:password@", "pass credentials in headers")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = _canonical_host(parts.hostname or "")
    except (ValueError, UnicodeError) as exc:
        raise _invalid(f"{url!r} has an invalid host or port: {exc}", example) from exc
    if not host or not _HOST.fullmatch(host):
        raise _invalid(f"{url!r} has an invalid host", example)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    path = _NON_ASCII.sub(lambda match: quote(match.group()), path)
    return Target(parts.scheme, host, port, path)


def check_allowed(target: Target, options: HttpOptions) -> None:
    """Raise a `denied` `ToolFailure` unless the target's host is on the allowlist."""
    if host_allowed(target.host, target.port, options.allow_hosts):
        return
    if not options.allow_hosts:
        raise ToolFailure(
            f"no host is allowed, so {target.url} is not",
            "continue without web access; this role's configuration allows no HTTP host",
            ToolErrorKind.DENIED,
        )
    raise ToolFailure(
        f"the host of {target.url} is not allowed",
        f"use a URL on one of these hosts: {', '.join(options.allow_hosts)}",
        ToolErrorKind.DENIED,
    )


def _request_headers(
    given: Mapping[str, str] | None, defaults: Mapping[str, str]
) -> dict[str, str]:
    """The model's headers, checked, over the defaults (names compared case-insensitively)."""
    merged = {name.lower(): (name, value) for name, value in defaults.items()}
    for name, value in (given or {}).items():
        if not _TOKEN.fullmatch(name):
            raise _invalid(f"{name!r} is not a valid header name", "use names like X-Api-Key")
        if name.lower() in REFUSED_HEADERS:
            raise _invalid(f"the header {name!r} may not be set", "leave it out; the tool sets it")
        if any(char in value for char in "\r\n\x00") or not value.isascii():
            raise _invalid(f"the value of {name!r} is not a one-line ASCII string", "fix it")
        merged[name.lower()] = (name, value)
    return dict(merged.values())


@dataclass(frozen=True)
class Reply:
    """One HTTP response as read: status, headers, body (at most `max_bytes`), whether cut."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes
    truncated: bool


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the request did not finish within timeout_s")
    return left


def _connect(target: Target, deadline: float) -> http.client.HTTPConnection:
    """A connection to exactly the target's host and port; never through a proxy."""
    if target.scheme == "https":
        return http.client.HTTPSConnection(
            target.host,
            target.port,
            timeout=_remaining(deadline),
            context=ssl.create_default_context(),
        )
    return http.client.HTTPConnection(target.host, target.port, timeout=_remaining(deadline))


def _send(
    method: str,
    target: Target,
    *,
    headers: Mapping[str, str],
    body: bytes | None,
    deadline: float,
    max_bytes: int,
) -> Reply:
    """One request and its response, the body read until `max_bytes` or the deadline."""
    conn = _connect(target, deadline)
    try:
        conn.connect()
        # Kept apart: the response reads from this socket even after the connection drops it.
        sock = conn.sock
        conn.request(method, target.path, body=body, headers=dict(headers))
        sock.settimeout(_remaining(deadline))
        response = conn.getresponse()
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            sock.settimeout(_remaining(deadline))
            chunk = response.read1(min(READ_CHUNK, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        response.close()
    finally:
        conn.close()
    data = b"".join(chunks)
    return Reply(response.status, response.headers, data[:max_bytes], size > max_bytes)


def failure_for(exc: OSError | http.client.HTTPException, url: str) -> ToolFailure:
    """The structured error for a network-level failure: transient unless retrying cannot help."""
    later = "try again later, or continue without this result"
    if isinstance(exc, TimeoutError):
        return ToolFailure(f"{url} timed out ({exc})", later, ToolErrorKind.TRANSIENT)
    if isinstance(exc, ssl.SSLError):
        return ToolFailure(
            f"TLS with {url} failed: {exc}", "do not retry; the host's certificate or TLS is bad"
        )
    if isinstance(exc, socket.gaierror):
        return ToolFailure(f"cannot resolve the host of {url}", later, ToolErrorKind.TRANSIENT)
    if isinstance(exc, OSError | http.client.IncompleteRead):
        return ToolFailure(
            f"{url} is unreachable: {type(exc).__name__}: {exc}", later, ToolErrorKind.TRANSIENT
        )
    return ToolFailure(f"{url} did not answer in valid HTTP: {exc!r}", "do not retry this URL")


def _text(data: bytes, *, truncated: bool) -> str:
    """UTF-8 with replacement; a character cut in half by truncation is dropped, not replaced."""
    return codecs.getincrementaldecoder("utf-8")("replace").decode(data, final=not truncated)


def _result(method: str, target: Target, reply: Reply) -> dict[str, object]:
    """The data returned to the model, or a `ToolFailure` for a 4xx or 5xx status."""
    body = _text(reply.body, truncated=reply.truncated)
    excerpt = " ".join(body[:EXCERPT_CHARS].split())
    said = f"{method} {target.url} answered {reply.status}: {excerpt or '(empty body)'}"
    busy = reply.status == HTTPStatus.TOO_MANY_REQUESTS
    if busy or reply.status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        wait = reply.headers.get("retry-after")
        when = f"after {wait} seconds" if wait and wait.isdigit() else "later"
        raise ToolFailure(
            said, f"try again {when}, or continue without it", ToolErrorKind.TRANSIENT
        )
    if reply.status >= HTTPStatus.BAD_REQUEST:
        raise ToolFailure(said, "do not repeat this request; fix the URL, method, headers or body")
    return {
        "status": reply.status,
        "headers": {
            name: reply.headers[name] for name in REPORTED_HEADERS if name in reply.headers
        },
        "body": body,
        "truncated": reply.truncated,
        "url": target.url,
    }


def fetch(
    method: str,
    url: str,
    context: ToolContext,
    headers: Mapping[str, str],
    body: bytes | None = None,
) -> dict[str, object]:
    """Check the URL and the allowlist, send the request, follow allowed redirects."""
    options = HttpOptions.from_options(context.options)
    target = parse_url(url)
    check_allowed(target, options)
    deadline = time.monotonic() + options.timeout_s
    headers = dict(headers)
    redirects = 0
    while True:  # bounded: each pass follows one redirect, at most MAX_REDIRECTS
        try:
            reply = _send(
                method,
                target,
                headers=headers,
                body=body,
                deadline=deadline,
                max_bytes=options.max_bytes,
            )
        except (OSError, http.client.HTTPException) as exc:
            raise failure_for(exc, target.url) from exc
        location = reply.headers.get("location")
        if reply.status not in REDIRECTS or not location:
            return _result(method, target, reply)
        if redirects == MAX_REDIRECTS:
            raise ToolFailure(
                f"{url} redirects more than {MAX_REDIRECTS} times", "continue without this URL"
            )
        redirects += 1
        try:
            following = parse_url(urljoin(target.url, location))
            check_allowed(following, options)
        except (ToolFailure, ValueError) as exc:
            raise ToolFailure(
                f"{target.url} redirects to {location!r}, which is refused: {exc}",
                "continue without this URL; it leads where these tools may not go",
                ToolErrorKind.DENIED,
            ) from exc
        if reply.status == HTTPStatus.SEE_OTHER or (reply.status in MOVED and method == "POST"):
            method, body = "GET", None  # as browsers do; 307 and 308 keep method and body
            headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        if following.host != target.host:
            headers = {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}
        target = following


@tool(tier="read", timeout_s=TOOL_TIMEOUT_S)
def http_get(
    url: str, context: ToolContext, headers: dict[str, str] | None = None
) -> dict[str, object]:
    """Fetch a URL on an allowed host with GET; returns status, content type and the text body."""
    return fetch("GET", url, context, _request_headers(headers, {"User-Agent": USER_AGENT}))


@tool(tier="write_risky", timeout_s=TOOL_TIMEOUT_S)
def http_request(
    method: str,
    url: str,
    context: ToolContext,
    body: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, object]:
    """Send a POST, PUT, PATCH or DELETE request with an optional text body to an allowed host."""
    verb = method.strip().upper()
    if verb in {"GET", "HEAD"}:
        raise _invalid(f"http_request does not send {verb}", "call http_get to read a URL")
    if verb not in WRITE_METHODS:
        raise _invalid(f"unsupported method {method!r}", f"use one of {', '.join(WRITE_METHODS)}")
    data = None if body is None else body.encode("utf-8")
    if data is not None and len(data) > MAX_REQUEST_BYTES:
        raise _invalid(f"the body is over {MAX_REQUEST_BYTES} bytes", "send a smaller body")
    defaults = {"User-Agent": USER_AGENT, "Idempotency-Key": context.idempotency_key}
    if data is not None:
        defaults["Content-Type"] = "text/plain; charset=utf-8"
    return fetch(verb, url, context, _request_headers(headers, defaults), data)
