"""`check_limits`: the pure check run before every step of an agent loop."""

from __future__ import annotations

import pytest

from hivebus.agent.limits import LimitHit, check_limits
from hivebus.contracts import Limits, Usage

LIMITS = Limits(max_steps=10, max_tokens=1000, max_wall_s=60.0, max_tool_calls=3)


def test_nothing_is_hit_inside_every_bound() -> None:
    """A run below every bound may take a model step and a tool step."""
    usage = Usage(input_tokens=500, output_tokens=499, steps=9, tool_calls=2)
    assert check_limits(LIMITS, usage, 59.9, tool_call=False) is None
    assert check_limits(LIMITS, usage, 59.9, tool_call=True) is None


@pytest.mark.parametrize(
    ("usage", "wall_s", "expected"),
    [
        (Usage(steps=10), 0.0, LimitHit("max_steps", 10, 10)),
        (Usage(input_tokens=600, output_tokens=400), 0.0, LimitHit("max_tokens", 1000, 1000)),
        (Usage(), 60.0, LimitHit("max_wall_s", 60.0, 60.0)),
        (Usage(), 61.23456, LimitHit("max_wall_s", 61.235, 60.0)),
    ],
    ids=["steps", "tokens", "wall", "wall-rounded"],
)
def test_each_bound_is_reached_at_equality(usage: Usage, wall_s: float, expected: LimitHit) -> None:
    """A bound is reached when usage equals it, for model and tool steps alike."""
    assert check_limits(LIMITS, usage, wall_s, tool_call=False) == expected
    assert check_limits(LIMITS, usage, wall_s, tool_call=True) == expected


def test_tool_call_bound_only_stops_tool_steps() -> None:
    """Spent tool calls stop the next tool call but still allow a model step to answer."""
    usage = Usage(tool_calls=3, steps=6)
    assert check_limits(LIMITS, usage, 0.0, tool_call=False) is None
    assert check_limits(LIMITS, usage, 0.0, tool_call=True) == LimitHit("max_tool_calls", 3, 3)


def test_steps_are_checked_before_tokens_wall_and_tool_calls() -> None:
    """When several bounds are reached, the step bound is the one reported."""
    usage = Usage(input_tokens=5000, steps=10, tool_calls=3)
    hit = check_limits(LIMITS, usage, 100.0, tool_call=True)
    assert hit is not None
    assert hit.limit == "max_steps"


def test_limit_hit_reason_names_the_limit_and_the_numbers() -> None:
    """The reason a person reads names the limit, the amount used and the bound."""
    assert LimitHit("max_wall_s", 0.25, 0.2).reason() == "max_wall_s reached (0.25 of 0.2)"
    assert LimitHit("max_steps", 5, 5).reason() == "max_steps reached (5 of 5)"
