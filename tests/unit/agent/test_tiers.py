"""The tier policy: a role's tiers are allowed, any other tier is denied with a usable result."""

from __future__ import annotations

import pytest

from hivebus.agent.tiers import TierDecision, TierPolicy
from hivebus.contracts import Tier, ToolErrorKind


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
