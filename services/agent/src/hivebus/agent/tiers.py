"""The tier policy: whether a role may call a tool of a given tier, enforced in the runtime.

    the tool's tier is one of the role's `tiers`   -> allow
    any other tier                                  -> deny: a `denied` result the model reads

Pure: no I/O, tested without a network. (A later decision, `approve` — a person must agree
before the call runs — slots in as a third `TierDecision`.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from hivebus.contracts import Tier, ToolErrorKind, ToolResult


class TierDecision(StrEnum):
    """What the runtime does with a call of some tier."""

    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True)
class TierPolicy:
    """The tiers one role may use freely."""

    allowed: frozenset[Tier]

    @classmethod
    def of(cls, tiers: Iterable[Tier]) -> TierPolicy:
        """The policy allowing exactly `tiers`."""
        return cls(frozenset(tiers))

    def decide(self, tier: Tier) -> TierDecision:
        """Whether a call of a tool of `tier` may run."""
        return TierDecision.ALLOW if tier in self.allowed else TierDecision.DENY

    @staticmethod
    def denied(tool: str, tier: Tier) -> ToolResult:
        """The result a denied call gives the model: what was refused and what to do instead."""
        return ToolResult.failure(
            ToolErrorKind.DENIED,
            f"tool {tool!r} has tier {tier.value!r}, which this role may not use",
            "finish without this action, or say in your answer that it needs a person",
        )
