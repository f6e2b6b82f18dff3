"""The dashboard's guard: token, decisions off loopback, JSON-only POSTs, body size, headers.

- `HIVEBUS_DASHBOARD_TOKEN` set: every `/api/` request needs `Authorization: Bearer <token>`
  or `?token=<token>` (EventSource cannot set headers), compared in constant time. The page
  itself (`/`, `/static/`) and `/healthz` hold no data and need none.
- Listening off loopback without a token: reads are allowed, every POST is refused (403).
- A POST must say `Content-Type: application/json` (a form cannot, so no cross-site form can
  decide) and carry at most `MAX_BODY` bytes (413).
- Every answer carries a strict Content-Security-Policy: scripts and everything else only from
  the dashboard itself, so nothing reaches another host even if text were ever mistaken for
  markup.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import parse_qs

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hivebus.console.dashboard.errors import error_response

MAX_BODY = 1024 * 1024
"""Largest request body accepted (1 MiB)."""

OPEN_PREFIXES = ("/static/",)
OPEN_PATHS = frozenset({"/", "/healthz", "/index.html"})
"""Paths that need no token: the page's own files and the health check."""

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def is_loopback(host: str) -> bool:
    """Whether listening on `host` keeps the dashboard to this machine."""
    if host.strip("[]").lower() in {"localhost", "localhost.", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any address


def off_loopback_refusal(host: str) -> str:
    """Why a POST is refused when the dashboard listens on `host` without a token."""
    return (
        f"decisions and replays need HIVEBUS_DASHBOARD_TOKEN when the dashboard listens on {host}"
    )


class Guard:
    """ASGI middleware applying the rules of the module docstring."""

    def __init__(self, app: ASGIApp, *, token: str | None, host: str) -> None:
        """Guard `app`; `token` None means no token is required (on loopback)."""
        self.app = app
        self.token = token.encode() if token else None
        self.host = host
        self.decisions_allowed = self.token is not None or is_loopback(host)

    def authorised(self, scope: Scope) -> bool:
        """Whether the request carries the token (always, when none is set)."""
        if self.token is None:
            return True
        given = ""
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            given = value.strip()
        else:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = (query.get("token") or [""])[0]
        return hmac.compare_digest(given.encode(), self.token)

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        path: str = scope["path"]
        needs_token = path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES)
        if needs_token and not self.authorised(scope):
            return 401, (
                "this dashboard needs its token: send `Authorization: Bearer <token>` "
                "(HIVEBUS_DASHBOARD_TOKEN) or `?token=<token>`"
            )
        if scope["method"] in {"GET", "HEAD"}:
            return None
        if not self.decisions_allowed:
            return 403, off_loopback_refusal(self.host)
        headers = Headers(scope=scope)
        media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            return 415, (
                f"Content-Type must be application/json, not {media or 'none'}: "
                "send the body as JSON"
            )
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY:
            return 413, f"the body is {length} bytes; at most {MAX_BODY} are accepted"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse, or pass the request on with the security headers added to the answer."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            status, text = refusal
            response = error_response(status, text)
            if status == 401:  # noqa: PLR2004 - the status is the rule
                response.headers["www-authenticate"] = "Bearer"
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)
