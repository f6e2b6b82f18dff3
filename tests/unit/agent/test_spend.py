"""Spend approvals before a model call.

A cost above `approve_cost_usd`, or the task budget used past `approve_at_budget` (asked once
per run), waits for a person; a declined spend ends the run `budget_exceeded`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hivebus.agent.approvals import ApprovalPolicy
from hivebus.agent.modelcall import Estimate
from hivebus.agent.models.base import TurnUsage
from hivebus.agent.spend import uncovered, used_share
from hivebus.agent.tool import tool
from hivebus.contracts import (
    ApprovalKind,
    Decision,
    RefusalCode,
    SubTaskStatus,
    TaskBudget,
    ToolCall,
    approval_id,
)
from hivebus.contracts.runs import RunPhase
from hivebus.core import Price
from hivebus.core.budget import LedgerState

from .approvalkit import SUBTASK, TASK, Harness, ended, paused, resolution, turns

PRICE = Price(input_per_mtok=3.0, output_per_mtok=15.0)
USAGE = TurnUsage(input_tokens=1000, output_tokens=1000)
COST = (1000 * 3.0 + 1000 * 15.0) / 1_000_000
"""What each model call of these tests costs (and reserves): $0.018."""


@tool(tier="read", timeout_s=5.0)
def look(key: str) -> str:
    """Look up a value."""
    return f"value of {key}"


def harness(workspace: Path, policy: ApprovalPolicy, budget: TaskBudget | None = None) -> Harness:
    """A run that looks something up, then answers; each model call costs `COST`."""
    model = turns([ToolCall(id="c1", name="look", args={"key": "a"})], "done", usage=USAGE)
    return Harness(
        workspace, model, [look], policy=policy, price=PRICE, budget=budget or TaskBudget()
    )


def half_spent(h: Harness, used_tokens: int = 6000) -> None:
    """Other runs of the task used `used_tokens` of its 10,000."""
    h.ledger.states[TASK] = LedgerState(
        max_tokens=10_000, max_cost_usd=10.0, used_tokens=used_tokens
    )


async def test_a_call_above_the_cost_threshold_waits_for_a_person(workspace: Path) -> None:
    """Each model call estimated above `approve_cost_usd` is asked first, at its own step."""
    h = harness(workspace, ApprovalPolicy(approve_cost_usd=0.01))
    [first] = paused(await h.run()).requests
    assert h.model.requests == []  # the model was not called
    assert h.saved[-1].phase is RunPhase.AWAITING_APPROVAL
    assert (first.approval_kind, first.call_id, first.step, first.tool) == (
        ApprovalKind.SPEND,
        "spend-1",
        1,
        "function:test",
    )
    assert first.approval_id == approval_id(TASK, SUBTASK, 1, 1, "spend-1")
    assert first.estimated_cost_usd == pytest.approx(COST)
    assert first.allowed_decisions == [Decision.APPROVE, Decision.REJECT]
    assert first.tier is None
    assert "above the role's approve_cost_usd ($0.0100)" in first.reason

    [second] = paused(await h.resume([resolution(first, Decision.APPROVE)])).requests
    assert second.call_id == "spend-3"  # model step 1, the tool call (2), then model step 3
    assert len(h.model.requests) == 1
    outcome = ended(await h.resume([resolution(second, Decision.APPROVE)]))
    assert (outcome.status, outcome.output) == (SubTaskStatus.COMPLETED, "done")
    # the first is saved applied with the tool turn; the last goes with the terminal event
    assert [p.applied for p in h.saved[-1].approvals] == [True, False]


async def test_a_call_under_the_cost_threshold_is_not_asked(workspace: Path) -> None:
    """Below `approve_cost_usd` the run goes on without asking."""
    h = harness(workspace, ApprovalPolicy(approve_cost_usd=0.05))
    outcome = ended(await h.run())
    assert outcome.status is SubTaskStatus.COMPLETED
    assert h.saved[-1].approvals == []


async def test_the_budget_share_is_asked_once_per_run(workspace: Path) -> None:
    """Past `approve_at_budget` the next call is asked once; allowed, the run is not asked again."""
    h = harness(workspace, ApprovalPolicy(approve_at_budget=0.5))
    half_spent(h)
    [request] = paused(await h.run()).requests
    assert "the task has used 60% of its budget (the role asks at 50%)" in request.reason
    assert request.arguments["budget_used"] == 0.6
    outcome = ended(await h.resume([resolution(request, Decision.APPROVE)]))
    assert outcome.status is SubTaskStatus.COMPLETED
    assert len(h.model.requests) == 2  # the second call was past the share too: not asked
    assert h.saved[-1].spend_approved_at == 0.5
    assert len(h.saved[-1].approvals) == 1


async def test_under_the_budget_share_nothing_is_asked(workspace: Path) -> None:
    """Below `approve_at_budget` no spend approval is asked."""
    h = harness(workspace, ApprovalPolicy(approve_at_budget=0.7))
    half_spent(h, used_tokens=1000)  # 10%, then 30% after the first call
    assert ended(await h.run()).status is SubTaskStatus.COMPLETED


async def test_both_thresholds_at_once_ask_one_approval(workspace: Path) -> None:
    """A call both costly and past the budget share is one approval giving both reasons."""
    h = harness(workspace, ApprovalPolicy(approve_cost_usd=0.01, approve_at_budget=0.5))
    half_spent(h)
    [request] = paused(await h.run()).requests
    assert "approve_cost_usd" in request.reason
    assert "of its budget" in request.reason


async def test_a_rejected_spend_ends_the_run_budget_exceeded(workspace: Path) -> None:
    """A person declines the spend: the model is never called; the run ends at the task budget."""
    h = harness(workspace, ApprovalPolicy(approve_cost_usd=0.01))
    [request] = paused(await h.run()).requests
    outcome = ended(await h.resume([resolution(request, Decision.REJECT, reason="too dear")]))
    assert (outcome.status, outcome.limit) == (SubTaskStatus.BUDGET_EXCEEDED, "task_budget")
    assert outcome.reason == "the model call's spend was not allowed (alice declined: too dear)"
    assert h.model.requests == []


async def test_a_spend_nobody_allowed_in_time_ends_the_run(workspace: Path) -> None:
    """A timed-out spend approval is a rejection: `budget_exceeded`, saying nobody decided."""
    h = harness(workspace, ApprovalPolicy(approve_cost_usd=0.01))
    [request] = paused(await h.run()).requests
    timeout = resolution(request, Decision.REJECT, by="hivebus", timed_out=True)
    outcome = ended(await h.resume([timeout]))
    assert outcome.status is SubTaskStatus.BUDGET_EXCEEDED
    assert "nobody decided in time" in outcome.reason


async def test_an_allowed_spend_the_budget_no_longer_covers_is_refused(workspace: Path) -> None:
    """Allowed, but the task spent its budget meanwhile: refused (budget), the run ends."""
    h = harness(
        workspace, ApprovalPolicy(approve_cost_usd=0.01), budget=TaskBudget(max_tokens=10_000)
    )
    [request] = paused(await h.run()).requests
    half_spent(h, used_tokens=9_000)
    outcome = ended(await h.resume([resolution(request, Decision.APPROVE)]))
    assert outcome.status is SubTaskStatus.BUDGET_EXCEEDED
    [refused] = h.refusals
    assert (refused.code, refused.decision_event_id) == (RefusalCode.BUDGET, None)
    assert h.model.requests == []


def test_the_used_share_and_what_the_budget_covers() -> None:
    """The larger share of tokens and cost counts; a call fits while used plus its bound does."""
    ledger = LedgerState(max_tokens=1000, max_cost_usd=1.0, used_tokens=100, used_cost_usd=0.5)
    assert used_share(ledger) == 0.5
    assert uncovered(ledger, Estimate(900, 0.5)) is None
    assert "100 of 1000 tokens are used" in (uncovered(ledger, Estimate(901, 0.0)) or "")
    assert "$0.5000 of $1.0000 is used" in (uncovered(ledger, Estimate(1, 0.6)) or "")
