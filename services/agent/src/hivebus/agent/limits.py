"""Limit checks for one run: pure data, on by default, checked before every step."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from hivebus.contracts import Limits, Usage


@dataclass(frozen=True)
class LimitHit:
    """A limit that a run reached: which one, how much was used, what the bound is."""

    limit: str
    used: float
    bound: float

    def reason(self) -> str:
        """In words, for the terminal event."""
        return f"{self.limit} reached ({self.used:g} of {self.bound:g})"


def check_limits(
    limits: Limits, usage: Usage, wall_s: float, *, tool_call: bool
) -> LimitHit | None:
    """Return the first limit the next step would break, or None.

    A model step needs one step left and token headroom; a tool step also needs a tool call left.
    """
    if usage.steps >= limits.max_steps:
        return LimitHit("max_steps", usage.steps, limits.max_steps)
    if usage.tokens >= limits.max_tokens:
        return LimitHit("max_tokens", usage.tokens, limits.max_tokens)
    if wall_s >= limits.max_wall_s:
        return LimitHit("max_wall_s", round(wall_s, 3), limits.max_wall_s)
    if tool_call and usage.tool_calls >= limits.max_tool_calls:
        return LimitHit("max_tool_calls", usage.tool_calls, limits.max_tool_calls)
    return None


SOFT_FRACTION = 0.8
"""At this share of any limit the model is told to wrap up."""


def soft_hits(limits: Limits, usage: Usage, wall_s: float) -> list[LimitHit]:
    """Every limit at or past 80% of its bound."""
    measured = (
        ("max_steps", usage.steps, limits.max_steps),
        ("max_tokens", usage.tokens, limits.max_tokens),
        ("max_wall_s", round(wall_s, 3), limits.max_wall_s),
        ("max_tool_calls", usage.tool_calls, limits.max_tool_calls),
    )
    return [
        LimitHit(name, used, bound)
        for name, used, bound in measured
        if bound > 0 and used >= SOFT_FRACTION * bound
    ]


def wrap_up(
    limits: Limits, usage: Usage, wall_s: float, warned: Collection[str]
) -> tuple[list[str], str]:
    """The limits newly past 80% (not in `warned`), and the note telling the model to wrap up.

    No limit newly past 80%: an empty list (and an empty note).
    """
    fresh = [hit for hit in soft_hits(limits, usage, wall_s) if hit.limit not in warned]
    if not fresh:
        return [], ""
    used = ", ".join(f"{hit.limit} {hit.used:g} of {hit.bound:g}" for hit in fresh)
    return [hit.limit for hit in fresh], (
        f"You have used 80% or more of your limits ({used}). Wrap up now: stop exploring "
        "and give your final answer with what you have."
    )
