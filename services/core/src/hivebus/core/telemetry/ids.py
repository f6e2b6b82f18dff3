"""Span and trace ids that any process can compute again, and a generator that can be told one.

A task's workflow span and each sub-task's span are recorded when they end, by whichever
orchestrator replica sees the end, long after their children were exported by other
processes. Their ids are derived from the task and sub-task ids, so every process agrees on
them without storing anything; `ForcedIds` lets the SDK use such an id for one span.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from collections.abc import Iterator

from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

_forced: contextvars.ContextVar[tuple[int | None, int | None]] = contextvars.ContextVar(
    "hivebus_forced_ids", default=(None, None)
)


def _digest(size: int, parts: tuple[str, ...]) -> int:
    value = int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=size).digest())
    return value or 1  # zero is the invalid id


def span_id_for(*parts: str) -> int:
    """A 64-bit span id determined by `parts` (never zero)."""
    return _digest(8, parts)


def trace_id_for(*parts: str) -> int:
    """A 128-bit trace id determined by `parts` (never zero)."""
    return _digest(16, parts)


@contextlib.contextmanager
def forced(trace_id: int | None, span_id: int | None) -> Iterator[None]:
    """Spans started in this block get these ids (the trace id only when they have no parent)."""
    token = _forced.set((trace_id, span_id))
    try:
        yield
    finally:
        _forced.reset(token)


class ForcedIds(IdGenerator):
    """Random ids, except inside `forced(...)`."""

    def __init__(self) -> None:
        """Fall back to the SDK's random generator."""
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        """The forced span id, or a random one."""
        span_id = _forced.get()[1]
        return span_id if span_id is not None else self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        """The forced trace id, or a random one."""
        trace_id = _forced.get()[0]
        return trace_id if trace_id is not None else self._random.generate_trace_id()
