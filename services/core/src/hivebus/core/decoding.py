"""Bounded decoding of JSON from the bus: a hostile message must not exhaust a service.

A body larger than `max_bytes`, or nested deeper than `max_depth`, is refused before (or
instead of) being turned into Python objects, with an error that says which bound it broke.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from faststream.message import StreamMessage

from hivebus.core.errors import UndecodableError

MAX_BODY_BYTES = 1024 * 1024
"""The default bound on a body: the server's default `max_payload`."""

MAX_DEPTH = 64
"""The default bound on nesting: far beyond any event, far below the interpreter's stack."""


def _depth(value: Any) -> int:
    """Nesting depth of a decoded value, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
    return deepest


def _may_nest_deeper(body: bytes, max_depth: int) -> bool:
    """Cheap pre-check: with at most `max_depth` brackets a body cannot nest deeper."""
    return body.count(b"[") + body.count(b"{") > max_depth


def decode_json(body: bytes, *, max_bytes: int = MAX_BODY_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value in `body`.

    Raises:
        UndecodableError: too large, nested too deeply, not UTF-8 or not JSON (never retryable).
    """
    if len(body) > max_bytes:
        raise UndecodableError(f"the message is {len(body)} bytes; at most {max_bytes} are read")
    try:
        value = json.loads(body)
    except RecursionError as exc:
        raise UndecodableError(f"the message is nested more than {max_depth} levels") from exc
    except UnicodeDecodeError as exc:
        raise UndecodableError(f"the message is not UTF-8: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise UndecodableError(f"the message is not JSON: {exc.msg} at position {exc.pos}") from exc
    if _may_nest_deeper(body, max_depth) and _depth(value) > max_depth:
        raise UndecodableError(f"the message is nested more than {max_depth} levels")
    return value


async def bounded_decoder(
    message: StreamMessage[Any], original: Callable[[StreamMessage[Any]], Awaitable[Any]]
) -> Any:
    """FastStream's decoder, within bounds: a body too large, too deep or not JSON stays bytes.

    A typed handler then fails validation (and the message is settled as unrecoverable); a
    handler that takes raw input decodes it itself with `decode_json` and says why.
    """
    content_type = message.content_type or ""
    if content_type and not content_type.startswith("application/json"):
        return await original(message)
    try:
        return decode_json(message.body)
    except UndecodableError:
        return message.body
