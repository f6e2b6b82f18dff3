"""The tier policy: whether a role may call a tool, must ask a person first, or may not at all.

    the tool's tier            the tool             decision
    one of the role's `tiers`  plain                allow
    one of the role's `tiers`  `needs_approval`     approve: a person decides before it runs
    one of the role's `tiers`  `asks_human`         approve: a person answers (`ask_human`)
    one of its `approve` tiers (and not `tiers`)    approve
    any other tier             any                  deny: a `denied` result the model reads

A flag never opens a tier: a `needs_approval` or `asks_human` tool of a tier the role may
not use at all is denied like any other. Enforced in the runtime, never in the prompt. Pure:
no I/O, tested without a network.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from hivebus.contracts import Tier, ToolErrorKind, ToolResult


class TierDecision(StrEnum):
    """What the runtime does with a call of some tier."""

    ALLOW = "allow"
    APPROVE = "approve"
    """The call waits for a person: the run pauses and resumes with the decision."""
    DENY = "deny"


@dataclass(frozen=True)
class TierPolicy:
    """The tiers one role may use freely, and those it may use only with a person's approval."""

    allowed: frozenset[Tier]
    approve: frozenset[Tier] = frozenset()

    @classmethod
    def of(cls, tiers: Iterable[Tier], approve: Iterable[Tier] = ()) -> TierPolicy:
        """The policy allowing `tiers` freely and `approve` with a person's approval."""
        return cls(frozenset(tiers), frozenset(approve))

    def decide(
        self, tier: Tier, *, needs_approval: bool = False, asks_human: bool = False
    ) -> TierDecision:
        """Whether a call of a tool of `tier` (with the tool's own flags) may run, and how."""
        if tier in self.allowed:
            return TierDecision.APPROVE if needs_approval or asks_human else TierDecision.ALLOW
        if tier in self.approve:
            return TierDecision.APPROVE
        return TierDecision.DENY

    def rule(self, tool: str, tier: Tier, *, asks_human: bool) -> str:
        """Why a call of `tool` waits for a person, in words for the person (`approve` only)."""
        if asks_human:
            return f"{tool!r} asks a person a question"
        if tier in self.allowed:  # only the tool's own `needs_approval` makes it wait
            return f"tool {tool!r} always needs a person's approval"
        return f"tool {tool!r} has tier {tier.value!r}, which this role may use only with approval"

    @staticmethod
    def denied(tool: str, tier: Tier) -> ToolResult:
        """The result a denied call gives the model: what was refused and what to do instead."""
        return ToolResult.failure(
            ToolErrorKind.DENIED,
            f"tool {tool!r} has tier {tier.value!r}, which this role may not use",
            "finish without this action, or say in your answer that it needs a person",
        )

    @staticmethod
    def unapproved(tool: str) -> ToolResult:
        """The result of a call that needs approval and reached the toolbox without one."""
        return ToolResult.failure(
            ToolErrorKind.DENIED,
            f"tool {tool!r} needs a person's approval, and this call has none",
            "call it through the run, which asks a person, or finish without it",
        )
