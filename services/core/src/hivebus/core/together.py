"""Independent steps awaited at once: their requests in flight together, errors not lost."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

__all__ = ["together"]


async def together(*steps: Awaitable[object]) -> list[object]:
    """Await independent steps at once; return their results in order, or raise the first error.

    Every step has run to its end before this returns or raises (`gather` alone would leave
    the others running after an error), so a handler never settles while one is in flight.
    """
    outcomes = await asyncio.gather(*steps, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes
