"""Tool-call approvals in the run, through the real loop.

The pause asks every approval of the turn at once; the resume applies each decision (approve,
modify, reject, respond) after re-checking expiry, policy and budget; a crash between an
approved call and its checkpoint applies its effect once.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hivebus.agent.approvals import ApprovalPolicy
from hivebus.agent.models.base import ModelResponse, TurnUsage
from hivebus.agent.tool import ToolContext, tool
from hivebus.agent.toolbox import Toolbox
from hivebus.agent.tools.email import send_email
from hivebus.agent.tools.human import ask_human
from hivebus.contracts import (
    ApprovalKind,
    Decision,
    RefusalCode,
    SubTaskStatus,
    TaskBudget,
    Tier,
    ToolCall,
    ToolErrorKind,
    approval_id,
)
from hivebus.contracts.approvals import DEFAULT_DECISIONS, SYSTEM_APPROVER, TIMED_OUT_REASON
from hivebus.contracts.runs import RunPhase

from .approvalkit import (
    RUN_ID,
    SUBTASK,
    TASK,
    Crash,
    Harness,
    ended,
    paused,
    resolution,
    results_seen,
    turns,
)

POSTED: list[str] = []
LOOKED: list[str] = []


@tool(tier="write_risky", timeout_s=5.0)
def post(text: str, context: ToolContext) -> str:
    """Post a message to the customer."""
    POSTED.append(f"{text}@{context.idempotency_key}")
    return f"posted {text}"


@tool(tier="read", timeout_s=5.0)
def look(key: str) -> str:
    """Look up a value."""
    LOOKED.append(key)
    return f"value of {key}"


@tool(tier="read", timeout_s=5.0, needs_approval=True)
def peek(key: str) -> str:
    """Read a private record (a person must allow each read)."""
    LOOKED.append(f"private {key}")
    return f"private {key}"


@tool(tier="destructive", timeout_s=5.0)
def wipe() -> str:
    """Wipe everything."""
    POSTED.append("wiped")
    return "wiped"


TOOLS = (post, look, peek, wipe, ask_human, send_email)
EMAIL = {"to": "customer@example.com", "subject": "Your refund", "body": "It is on its way."}


@pytest.fixture(autouse=True)
def _clean() -> None:
    POSTED.clear()
    LOOKED.clear()


def call(call_id: str, name: str, **args: Any) -> ToolCall:
    """A tool call the model makes."""
    return ToolCall(id=call_id, name=name, args=args)


def harness(workspace: Path, *answers: Any, **options: Any) -> Harness:
    """A harness whose model plays `answers` (the last one a final answer)."""
    return Harness(workspace, turns(*answers), TOOLS, **options)


# --- the pause ---------------------------------------------------------------------------------


async def test_a_turn_pauses_at_its_first_call_needing_approval_asking_all_at_once(
    workspace: Path,
) -> None:
    """Calls before it ran, none after it did; one request per risky call, each naming both."""
    turn = ModelResponse(
        text="I will reply twice.",
        tool_calls=[
            call("c1", "look", key="a"),
            call("c2", "post", text="x"),
            call("c3", "look", key="b"),
            call("c4", "post", text="y"),
        ],
    )
    h = harness(workspace, turn, "done")
    pause = paused(await h.run())

    ids = [approval_id(TASK, SUBTASK, 1, 1, "c2"), approval_id(TASK, SUBTASK, 1, 1, "c4")]
    assert [r.approval_id for r in pause.requests] == ids
    first, second = pause.requests
    assert first.pause == second.pause == ids
    assert (first.approval_kind, first.tool, first.tier, first.call_id, first.step) == (
        ApprovalKind.TOOL_CALL,
        "post",
        Tier.WRITE_RISKY,
        "c2",
        1,
    )
    assert (first.task_id, first.subtask_id, first.attempt, first.run_id, first.role) == (
        TASK,
        SUBTASK,
        1,
        RUN_ID,
        "mailer",
    )
    assert (first.arguments, second.arguments) == ({"text": "x"}, {"text": "y"})
    assert first.args_schema == post.input_schema()
    assert first.allowed_decisions == list(DEFAULT_DECISIONS)
    assert first.expires_at == h.clock.now() + timedelta(seconds=3600)
    assert "'write_risky'" in first.reason
    assert "I will reply twice." in first.reason
    assert LOOKED == ["a"]
    assert POSTED == []

    state = h.saved[-1]
    assert state.phase is RunPhase.AWAITING_APPROVAL
    assert [c.id for c in state.pending_calls] == ["c2", "c3", "c4"]
    assert [o.call_id for o in state.outcomes] == ["c1"]
    assert [p.request for p in state.approvals] == pause.requests
    assert all(p.resolution is None and not p.applied for p in state.approvals)
    assert [(e.step_kind, e.name) for e in h.sink.events] == [
        ("model", "function:test"),
        ("tool", "look"),
    ]


async def test_asking_again_after_a_crash_asks_the_same_question(workspace: Path) -> None:
    """Paused again from the checkpoint before the pause: the same ids, the same requests."""
    h = harness(workspace, [call("c1", "post", text="x")], "done")
    first = paused(await h.run())
    before_pause = h.saved[0]
    assert before_pause.phase is RunPhase.TOOLS
    again = paused(await h.run(before_pause.model_copy(deep=True)))
    assert [r.model_dump(exclude={"ts"}) for r in again.requests] == [
        r.model_dump(exclude={"ts"}) for r in first.requests
    ]


async def test_a_delivery_finding_the_run_paused_asks_again_and_runs_nothing(
    workspace: Path,
) -> None:
    """Without resolutions a paused run stays paused: the same requests, nothing run."""
    h = harness(workspace, [call("c1", "post", text="x")], "done")
    first = paused(await h.run())
    saves = len(h.saved)
    again = paused(await h.resume([]))
    assert again.requests == first.requests
    again = paused(await h.run(h.saved[-1].model_copy(deep=True)))  # the loop guards it too
    assert again.requests == first.requests
    assert POSTED == []
    assert len(h.saved) == saves


async def test_a_tool_that_always_needs_approval_pauses_in_a_free_tier(workspace: Path) -> None:
    """`needs_approval=True` makes a `read` tool wait, saying it is the tool's own rule."""
    h = harness(workspace, [call("c1", "peek", key="k")], "done")
    [request] = paused(await h.run()).requests
    assert request.reason == "tool 'peek' always needs a person's approval"
    assert LOOKED == []


async def test_calls_that_would_fail_anyway_are_not_asked_about(workspace: Path) -> None:
    """Invalid arguments and denied tiers get their structured error at once, no pause."""
    h = harness(workspace, [call("c1", "post", nope=1), call("c2", "wipe")], "done")
    outcome = ended(await h.run())
    assert outcome.status is SubTaskStatus.COMPLETED
    seen = results_seen(h.model, 1)
    assert seen["c1"].result.error is not None
    assert seen["c1"].result.error.kind is ToolErrorKind.INVALID_ARGUMENTS
    assert seen["c2"].result.error is not None
    assert seen["c2"].result.error.kind is ToolErrorKind.DENIED
    assert POSTED == []
    assert h.sink.side == []  # nothing besides steps was published


async def test_the_toolbox_refuses_a_call_needing_approval_without_one(
    tool_context: ToolContext,
) -> None:
    """Only the tool turn, after a person decided, may run such a call (`approved=True`)."""
    toolbox = Toolbox([post], [Tier.READ], approve_tiers=[Tier.WRITE_RISKY])
    refused = await toolbox.call("post", {"text": "x"}, tool_context)
    assert refused.error is not None
    assert refused.error.kind is ToolErrorKind.DENIED
    assert "needs a person's approval" in refused.error.message
    assert POSTED == []
    ran = await toolbox.call("post", {"text": "x"}, tool_context, approved=True)
    assert ran.data == "posted x"


# --- the resume ---------------------------------------------------------------------------------


async def test_approve_runs_each_call_once_with_its_idempotency_key(workspace: Path) -> None:
    """Approved calls run in order, keyed `run:step:call`; `applied` is saved with each outcome."""
    turn = [
        call("c1", "look", key="a"),
        call("c2", "post", text="x"),
        call("c3", "look", key="b"),
        call("c4", "post", text="y"),
    ]
    h = harness(workspace, turn, "done")
    pause = paused(await h.run())
    outcome = ended(await h.resume([resolution(r, Decision.APPROVE) for r in pause.requests]))

    assert (outcome.status, outcome.output) == (SubTaskStatus.COMPLETED, "done")
    assert [f"x@{RUN_ID}:3:c2", f"y@{RUN_ID}:5:c4"] == POSTED
    assert LOOKED == ["a", "b"]
    after_c2 = next(s for s in h.saved if any(o.call_id == "c2" for o in s.outcomes))
    assert [p.applied for p in after_c2.approvals] == [True, False]
    assert all(p.applied for p in h.saved[-1].approvals)
    seen = results_seen(h.model, 1)
    assert [seen[c].result.data for c in ("c2", "c4")] == ["posted x", "posted y"]
    assert h.refusals == []


async def test_modify_runs_the_new_arguments_and_tells_the_model(workspace: Path) -> None:
    """The call runs with the person's arguments (same key); the model is told what changed."""
    h = harness(workspace, [call("c1", "post", text="x")], "done")
    [request] = paused(await h.run()).requests
    outcome = ended(await h.resume([resolution(request, Decision.MODIFY, arguments={"text": "z"})]))
    assert outcome.status is SubTaskStatus.COMPLETED
    assert [f"z@{RUN_ID}:2:c1"] == POSTED
    [tool_step] = [e for e in h.sink.events if e.step_kind == "tool"]
    assert tool_step.input == {"text": "z"}
    last = h.model.requests[-1].messages[-1]
    assert last.role == "user"
    assert "alice changed the arguments of post (c1)" in (last.text or "")
    assert '"from": "x", "to": "z"' in (last.text or "")


async def test_modify_with_invalid_arguments_gives_the_model_invalid_arguments(
    workspace: Path,
) -> None:
    """Arguments that fail the tool's schema are not run: `invalid_arguments` reaches the model."""
    h = harness(workspace, [call("c1", "post", text="x")], "done")
    [request] = paused(await h.run()).requests
    outcome = ended(
        await h.resume([resolution(request, Decision.MODIFY, arguments={"text": 5, "cc": "b"})])
    )
    assert outcome.status is SubTaskStatus.COMPLETED
    assert POSTED == []
    error = results_seen(h.model, 1)["c1"].result.error
    assert error is not None
    assert error.kind is ToolErrorKind.INVALID_ARGUMENTS


async def test_reject_reaches_the_model_as_a_rejected_result_and_the_run_goes_on(
    workspace: Path,
) -> None:
    """Nothing runs; the model reads who declined and why, and still gives its final answer."""
    h = harness(workspace, [call("c1", "post", text="x")], "I could not post it")
    [request] = paused(await h.run()).requests
    outcome = ended(
        await h.resume([resolution(request, Decision.REJECT, reason="not to this customer")])
    )
    assert (outcome.status, outcome.output) == (SubTaskStatus.COMPLETED, "I could not post it")
    assert POSTED == []
    result = results_seen(h.model, 1)["c1"].result
    assert result.error is not None
    assert result.error.kind is ToolErrorKind.REJECTED
    assert result.error.message == "alice declined the call to 'post': not to this customer"
    [tool_step] = [e for e in h.sink.events if e.step_kind == "tool"]
    assert tool_step.output["error"]["kind"] == "rejected"
    assert outcome.usage.tool_calls == 1


async def test_respond_makes_the_answer_the_result_of_ask_human(workspace: Path) -> None:
    """`ask_human` asks a question (respond or reject); the answer is the tool's result."""
    h = harness(workspace, [call("c1", "ask_human", question="Which plan?")], "gold it is")
    [request] = paused(await h.run()).requests
    assert request.approval_kind is ApprovalKind.QUESTION
    assert request.question == "Which plan?"
    assert request.allowed_decisions == [Decision.RESPOND, Decision.REJECT]
    assert request.tier is Tier.READ
    outcome = ended(await h.resume([resolution(request, Decision.RESPOND, answer="the gold one")]))
    assert outcome.status is SubTaskStatus.COMPLETED
    result = results_seen(h.model, 1)["c1"].result
    assert result.data == {"answer": "the gold one", "by": "alice"}


async def test_a_timed_out_approval_is_a_rejection_saying_so(workspace: Path) -> None:
    """Nobody decided in time: `rejected` naming the timeout; nothing refused, nothing run."""
    h = harness(workspace, [call("c1", "post", text="x")], "done")
    [request] = paused(await h.run()).requests
    timeout = resolution(
        request,
        Decision.REJECT,
        by=SYSTEM_APPROVER,
        reason=TIMED_OUT_REASON,
        timed_out=True,
        decided_at=request.expires_at,
    )
    outcome = ended(await h.resume([timeout]))
    assert outcome.status is SubTaskStatus.COMPLETED
    error = results_seen(h.model, 1)["c1"].result.error
    assert error is not None
    assert error.kind is ToolErrorKind.REJECTED
    assert error.message == "nobody decided about the call to 'post' in time (approval timed out)"
    assert h.refusals == []
    assert POSTED == []


async def test_a_decision_made_after_the_expiry_is_refused_at_resume(workspace: Path) -> None:
    """Decided after `expires_at`: `ApprovalRefused` (expired, no decision event), not run."""
    h = harness(workspace, [call("c1", "post", text="x")], "done")
    [request] = paused(await h.run()).requests
    late = resolution(
        request, Decision.APPROVE, decided_at=request.expires_at + timedelta(seconds=5)
    )
    outcome = ended(await h.resume([late]))
    assert outcome.status is SubTaskStatus.COMPLETED
    [refused] = h.refusals
    assert (refused.approval_id, refused.code, refused.decision, refused.by) == (
        request.approval_id,
        RefusalCode.EXPIRED,
        Decision.APPROVE,
        "alice",
    )
    assert refused.decision_event_id is None
    assert POSTED == []
    error = results_seen(h.model, 1)["c1"].result.error
    assert error is not None
    assert error.kind is ToolErrorKind.REJECTED


async def test_a_policy_that_now_denies_the_tool_refuses_the_approval(workspace: Path) -> None:
    """The role no longer allows the tier at resume: refused (policy), the model reads `denied`."""
    h = harness(workspace, [call("c1", "post", text="x")], "done")
    [request] = paused(await h.run()).requests
    h.approve = ()  # the worker that resumes runs with a configuration denying write_risky
    outcome = ended(await h.resume([resolution(request, Decision.APPROVE)]))
    assert outcome.status is SubTaskStatus.COMPLETED
    [refused] = h.refusals
    assert refused.code is RefusalCode.POLICY
    assert refused.decision_event_id is None
    assert "no longer allows 'post'" in refused.why
    error = results_seen(h.model, 1)["c1"].result.error
    assert error is not None
    assert error.kind is ToolErrorKind.DENIED
    assert POSTED == []


async def test_a_budget_spent_while_waiting_refuses_every_approval_and_ends_the_run(
    workspace: Path,
) -> None:
    """At resume the budget cannot cover the next model call: refused (budget), nothing run."""
    h = Harness(
        workspace,
        turns(
            [call("c1", "post", text="x"), call("c2", "post", text="y")],
            "done",
            usage=TurnUsage(input_tokens=100, output_tokens=10),
        ),
        TOOLS,
        budget=TaskBudget(max_tokens=1000),
    )
    pause = paused(await h.run())
    ledger = h.ledger.states[TASK]
    assert ledger.used_tokens == 110
    h.ledger.states[TASK] = ledger.model_copy(update={"used_tokens": 950})  # other runs spent it
    outcome = ended(await h.resume([resolution(r, Decision.APPROVE) for r in pause.requests]))

    assert (outcome.status, outcome.limit) == (SubTaskStatus.BUDGET_EXCEEDED, "task_budget")
    assert "950 of 1000 tokens are used" in outcome.reason
    assert [(r.approval_id, r.code) for r in h.refusals] == [
        (request.approval_id, RefusalCode.BUDGET) for request in pause.requests
    ]
    assert all(r.decision_event_id is None for r in h.refusals)
    assert POSTED == []
    assert len(h.model.requests) == 1


async def test_a_crash_after_the_approved_email_before_its_checkpoint_sends_it_once(
    workspace: Path,
) -> None:
    """The run resumed again from the checkpoint before the call writes the outbox file once."""
    h = harness(workspace, [call("c1", "send_email", **EMAIL)], "sent")
    [request] = paused(await h.run()).requests
    h.crash_at = len(h.saved) + 2  # the resume's own save, then the save after the email
    with pytest.raises(Crash):
        await h.resume([resolution(request, Decision.APPROVE)])
    outbox = sorted((workspace / "outbox").glob("*.eml"))
    assert len(outbox) == 1  # the effect happened before the crash
    resumed = h.saved[-2]
    assert resumed.phase is RunPhase.TOOLS
    assert resumed.approvals[0].resolution is not None
    assert not resumed.approvals[0].applied

    h.crash_at = None
    outcome = ended(await h.run(resumed.model_copy(deep=True)))
    assert outcome.status is SubTaskStatus.COMPLETED
    assert sorted((workspace / "outbox").glob("*.eml")) == outbox
    sends = [e for e in h.sink.events if e.step_kind == "tool"]
    assert [e.output["data"]["replayed"] for e in sends] == [False, True]
    assert len({e.output["data"]["outbox"] for e in sends}) == 1  # the same key both times
    assert "customer@example.com" in outbox[0].read_text(encoding="utf-8")


async def test_the_role_timeout_and_decisions_shape_the_request(workspace: Path) -> None:
    """`approval_timeout_s` sets `expires_at`; `allowed_decisions` what a person may decide."""
    policy = ApprovalPolicy(timeout_s=90, decisions=(Decision.APPROVE, Decision.REJECT))
    h = harness(workspace, [call("c1", "post", text="x")], "done", policy=policy)
    [request] = paused(await h.run()).requests
    assert request.expires_at == h.clock.now() + timedelta(seconds=90)
    assert request.allowed_decisions == [Decision.APPROVE, Decision.REJECT]
