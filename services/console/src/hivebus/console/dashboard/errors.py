"""How the API says what is wrong: `{"error": "<in words>"}` with the status that fits.

400  bad input (the message names the field)     409  refused by the orchestrator
401  token missing or wrong                      413  body over 1 MiB
403  refused by policy (off loopback, no token)  415  a POST that is not JSON
404  no such task, approval or dead letter       503  the bus is unreachable (yet)
"""

from __future__ import annotations

from typing import Any

import nats.errors
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hivebus.core import get_logger

log = get_logger(__name__)


class ApiError(Exception):
    """An answer other than 200, with what is wrong in words (and extra fields, if any)."""

    def __init__(self, status: int, message: str, extra: dict[str, Any] | None = None) -> None:
        """`status` and the `error` text; `extra` goes into the body beside it."""
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra or {}


def error_response(status: int, message: str, extra: dict[str, Any] | None = None) -> JSONResponse:
    """The JSON body of an error."""
    return JSONResponse({"error": message, **(extra or {})}, status_code=status)


async def on_api_error(_: Request, exc: Exception) -> Response:
    """An `ApiError` as its JSON answer."""
    assert isinstance(exc, ApiError)  # noqa: S101 - registered for ApiError only
    return error_response(exc.status, exc.message, exc.extra)


async def on_http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no such route) and 405 (wrong method) in the same shape."""
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    if exc.status_code == 404:  # noqa: PLR2004 - the status is the message
        return error_response(404, f"no such page or API route: {request.url.path}")
    if exc.status_code == 405:  # noqa: PLR2004
        return error_response(405, f"{request.method} is not allowed on {request.url.path}")
    return error_response(exc.status_code, str(exc.detail))


async def on_bus_error(request: Request, exc: Exception) -> Response:
    """A failed request to the bus: 503, saying so (the dashboard retries by itself)."""
    log.warning("dashboard_bus_error", path=request.url.path, error=repr(exc))
    return error_response(503, f"the bus did not answer ({exc!r}); try again shortly")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiError: on_api_error,
    HTTPException: on_http_error,
    nats.errors.Error: on_bus_error,
    TimeoutError: on_bus_error,
}
"""Passed to the Starlette app."""
