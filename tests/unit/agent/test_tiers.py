"""The tier policy: a role's tiers are allowed, its `approve` tiers wait for a person.

Any other tier is denied with a result the model can use.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hivebus.agent.approvals import ApprovalPolicy
from hivebus.agent.role import RoleRuntime
from hivebus.agent.tiers import TierDecision, TierPolicy
from hivebus.contracts import Decision, Tier, ToolErrorKind
from hivebus.core import Settings, parse_config


@pytest.mark.parametrize("tier", list(Tier))
def test_a_role_may_use_exactly_its_tiers(tier: Tier) -> None:
    """A tier in the role's list is allowed; every other tier is denied."""
    only = TierPolicy.of([tier])
    assert only.decide(tier) is TierDecision.ALLOW
    for other in set(Tier) - {tier}:
        assert only.decide(other) is TierDecision.DENY


def test_a_role_without_tiers_may_use_no_tool() -> None:
    """An empty tier list denies every tier, `read` included."""
    assert {TierPolicy.of([]).decide(tier) for tier in Tier} == {TierDecision.DENY}


def test_a_denial_names_the_tool_and_tier_and_what_to_do() -> None:
    """The `denied` result names the tool and its tier and suggests finishing without it."""
    result = TierPolicy.denied("wipe", Tier.DESTRUCTIVE)
    assert not result.ok
    assert result.error is not None
    assert result.error.kind is ToolErrorKind.DENIED
    assert result.error.message == "tool 'wipe' has tier 'destructive', which this role may not use"
    assert "needs a person" in result.error.suggestion


# --- approvals --------------------------------------------------------------------------------

A, P, D = TierDecision.ALLOW, TierDecision.APPROVE, TierDecision.DENY
MAILER = TierPolicy.of([Tier.READ, Tier.WRITE_SAFE], approve=[Tier.WRITE_RISKY])
"""A role that reads and writes freely and may send (write_risky) with approval."""


@pytest.mark.parametrize(
    ("tier", "needs_approval", "asks_human", "expected"),
    [
        (Tier.READ, False, False, A),
        (Tier.READ, True, False, P),
        (Tier.READ, False, True, P),
        (Tier.READ, True, True, P),
        (Tier.WRITE_SAFE, False, False, A),
        (Tier.WRITE_SAFE, True, False, P),
        (Tier.WRITE_RISKY, False, False, P),
        (Tier.WRITE_RISKY, True, False, P),
        (Tier.WRITE_RISKY, False, True, P),
        (Tier.DESTRUCTIVE, False, False, D),
        (Tier.DESTRUCTIVE, True, False, D),
        (Tier.DESTRUCTIVE, False, True, D),
    ],
)
def test_the_policy_table(
    tier: Tier,
    needs_approval: bool,  # noqa: FBT001 - a parametrized column
    asks_human: bool,  # noqa: FBT001 - a parametrized column
    expected: TierDecision,
) -> None:
    """Free tiers run (unless the tool asks a person), approve tiers wait, others are denied."""
    decided = MAILER.decide(tier, needs_approval=needs_approval, asks_human=asks_human)
    assert decided is expected


def test_a_tier_in_both_lists_is_used_freely() -> None:
    """A tier a role lists in `tiers` and in `approve` needs no approval."""
    both = TierPolicy.of([Tier.WRITE_RISKY], approve=[Tier.WRITE_RISKY])
    assert both.decide(Tier.WRITE_RISKY) is A
    assert both.decide(Tier.WRITE_RISKY, needs_approval=True) is P


def test_the_rule_says_why_a_person_is_asked() -> None:
    """The rule names the tier of an approve tier, the tool's own flag, or the question."""
    assert "which this role may use only with approval" in MAILER.rule(
        "send_email", Tier.WRITE_RISKY, asks_human=False
    )
    assert MAILER.rule("wire", Tier.READ, asks_human=False) == (
        "tool 'wire' always needs a person's approval"
    )
    assert "asks a person" in MAILER.rule("ask_human", Tier.READ, asks_human=True)


def test_the_role_configuration_makes_the_policy(tmp_path: Path) -> None:
    """`RoleRuntime` builds the toolbox's tiers and the approval settings from `RoleConfig`."""
    config = parse_config(
        {
            "roles": {
                "mailer": {
                    "system": "s",
                    "model": "scripted:x.yaml",
                    "tiers": ["read"],
                    "approve": ["write_safe", "write_risky"],
                    "approve_cost_usd": 0.5,
                    "approve_at_budget": 0.8,
                    "approval_timeout_s": 60,
                    "allowed_decisions": ["approve", "reject"],
                }
            }
        },
        tmp_path,
    )
    runtime = RoleRuntime(Settings(), config, "mailer")
    assert runtime.toolbox.tiers == TierPolicy.of(
        [Tier.READ], approve=[Tier.WRITE_SAFE, Tier.WRITE_RISKY]
    )
    assert runtime.approvals == ApprovalPolicy(
        timeout_s=60,
        decisions=(Decision.APPROVE, Decision.REJECT),
        approve_cost_usd=0.5,
        approve_at_budget=0.8,
    )
    default = RoleRuntime(
        Settings(), parse_config({"roles": {"r": {"system": "s", "model": "m"}}}, tmp_path), "r"
    )
    assert default.toolbox.tiers == TierPolicy.of([Tier.READ], approve=[Tier.WRITE_RISKY])
