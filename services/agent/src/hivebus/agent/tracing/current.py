"""A call's span made current for the call's block, then closed by how the block ended."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol, TypeVar

from opentelemetry import trace


class Closing(Protocol):
    """A live call trace: its span, and how it ends (with the error, or None)."""

    @property
    def span(self) -> trace.Span:
        """The call's span."""
        ...

    def close(self, error: BaseException | None) -> None:
        """End the span: failed with `error`, or by what the call recorded."""
        ...


LiveT = TypeVar("LiveT", bound=Closing)


@contextlib.contextmanager
def current_until_closed(live: LiveT) -> Iterator[LiveT]:
    """Make `live.span` current inside the block; close it with the block's error, if any."""
    with trace.use_span(
        live.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    ):
        try:
            yield live
        except BaseException as exc:
            live.close(exc)
            raise
        live.close(None)
