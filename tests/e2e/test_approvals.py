"""Human approvals end to end: a real nats-server, the whole stack, decisions as events.

A role may send email (`send_email`, tier `write_risky`) only with a person's approval. Each
test submits a task, waits for the `ApprovalRequested` the run publishes when it pauses, sends
`ApprovalDecided` on CONTROL as a client would, and follows the task to its end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hivetest import TaskEvents, write_config

from hivebus.console.client import HiveClient
from hivebus.console.stack import LocalStack
from hivebus.contracts import (
    ApprovalDecided,
    ApprovalRefused,
    ApprovalRequested,
    ApprovalResolved,
    Decision,
    RefusalCode,
    SubTaskStatus,
    TaskFinished,
    TaskStatus,
    approval_id,
)
from hivebus.core import HivebusConfig, Publisher, Settings, jetstream

pytestmark = pytest.mark.e2e

WAIT_S = 30.0
"""Bound on waiting for any one event."""

EMAIL = {"to": "customer@example.com", "subject": "Your refund", "body": "It is on its way."}
SEND = "hivebus.agent.tools.email:send_email"
ASK = "hivebus.agent.tools.human:ask_human"


def _config(tmp_path: Path, turns: list[dict[str, Any]], **role: Any) -> HivebusConfig:
    (tmp_path / "mailer.yaml").write_text(json.dumps(turns), encoding="utf-8")
    return write_config(
        tmp_path,
        {
            "mailer": {
                "system": "You answer customers.",
                "model": "scripted:mailer.yaml",
                "tools": [SEND, ASK],
                "tiers": ["read"],
                "validators": [],
                **role,
            }
        },
    )


def _send_then_answer(answer: str = "done") -> list[dict[str, Any]]:
    return [{"tool": "send_email", "args": EMAIL}, {"text": answer}]


def _task(task_id: str, subtasks: list[str] | None = None, **budget: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task_id": task_id,
        "goal": "answer the customer",
        "plan": {
            "subtasks": [
                {"id": sid, "role": "mailer", "prompt": "reply"} for sid in subtasks or ["send"]
            ]
        },
    }
    if budget:
        body["budget"] = budget
    return body


def _outbox(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "workspace" / "outbox"
    return sorted(folder.glob("*.eml")) if folder.is_dir() else []


async def _decide(
    client: HiveClient, task_id: str, ap: str, decision: Decision, **extra: Any
) -> str:
    """Send a decision as any client would; return its event id."""
    decided = ApprovalDecided(
        task_id=task_id, approval_id=ap, decision=decision, by=extra.pop("by", "alice"), **extra
    )
    await Publisher(client.broker, 5.0).publish(decided)
    return decided.event_id


async def _finish(client: HiveClient, log: TaskEvents) -> TaskFinished:
    found = await log.wait("task_finished")
    return await client.whole_result(TaskFinished.model_validate(found[0]))


async def test_approved_email_is_sent_once_and_the_task_completes(
    tmp_path: Path, settings: Settings
) -> None:
    """Pause, approve, resume: the email is in the outbox once and the summary names alice."""
    config = _config(tmp_path, _send_then_answer())
    async with LocalStack(settings, config), HiveClient(settings.nats_url or "", settings) as c:
        log = TaskEvents(WAIT_S)
        await log.follow(await jetstream(c.broker), "ok-1")
        await c.submit(_task("ok-1"))
        [request] = await log.wait("approval_requested")
        asked = ApprovalRequested.model_validate(request)
        assert asked.approval_id == approval_id("ok-1", "send", 1, 1, "call_1")
        assert asked.tool == "send_email"
        assert asked.arguments == EMAIL
        assert asked.tier == "write_risky"
        assert _outbox(tmp_path) == []  # nothing is sent before the decision
        status, _, _ = await c.status("ok-1")
        await _decide(c, "ok-1", asked.approval_id, Decision.APPROVE, reason="fine")
        result = await _finish(c, log)
    assert status is not None
    assert result.status == TaskStatus.COMPLETED
    [mail] = _outbox(tmp_path)
    assert "customer@example.com" in mail.read_text(encoding="utf-8")
    [summary] = result.subtasks
    [approval] = summary.approvals
    assert (approval.decision, approval.by, approval.tool) == (
        Decision.APPROVE,
        "alice",
        "send_email",
    )
    [resolved] = log.of("approval_resolved")
    assert resolved["decision"] == "approve"


async def test_rejected_call_reaches_the_model_and_the_run_goes_on(
    tmp_path: Path, settings: Settings
) -> None:
    """A rejection is the call's structured result: nothing is sent; the run still finishes."""
    config = _config(tmp_path, _send_then_answer("I could not send it"))
    async with LocalStack(settings, config), HiveClient(settings.nats_url or "", settings) as c:
        log = TaskEvents(WAIT_S)
        await log.follow(await jetstream(c.broker), "no-1")
        await c.submit(_task("no-1"))
        [request] = await log.wait("approval_requested")
        await _decide(c, "no-1", request["approval_id"], Decision.REJECT, reason="not now")
        result = await _finish(c, log)
    assert _outbox(tmp_path) == []
    assert result.status == TaskStatus.COMPLETED
    [summary] = result.subtasks
    assert [a.decision for a in summary.approvals] == [Decision.REJECT]
    assert summary.approvals[0].reason == "not now"
    tool_steps = [e for e in log.of("step") if e["step_kind"] == "tool"]
    [step] = tool_steps
    assert step["output"]["error"]["kind"] == "rejected"


async def test_modify_runs_the_new_arguments_and_invalid_ones_are_refused(
    tmp_path: Path, settings: Settings
) -> None:
    """Schema-invalid arguments are refused and change nothing; valid ones are what is sent."""
    config = _config(tmp_path, _send_then_answer())
    async with LocalStack(settings, config), HiveClient(settings.nats_url or "", settings) as c:
        log = TaskEvents(WAIT_S)
        await log.follow(await jetstream(c.broker), "mod-1")
        await c.submit(_task("mod-1"))
        [request] = await log.wait("approval_requested")
        ap = request["approval_id"]
        bad = await _decide(c, "mod-1", ap, Decision.MODIFY, arguments={"to": 42})
        [refused] = await log.wait("approval_refused", lambda e: e["decision_event_id"] == bad)
        assert refused["code"] == RefusalCode.INVALID
        changed = {**EMAIL, "to": "boss@example.com"}
        await _decide(c, "mod-1", ap, Decision.MODIFY, arguments=changed, reason="cc the boss")
        result = await _finish(c, log)
    assert result.status == TaskStatus.COMPLETED
    [mail] = _outbox(tmp_path)
    assert "boss@example.com" in mail.read_text(encoding="utf-8")
    [approval] = result.subtasks[0].approvals
    assert approval.arguments_diff == {
        "to": {"from": "customer@example.com", "to": "boss@example.com"}
    }


async def test_duplicate_late_and_unknown_decisions_are_refused(
    tmp_path: Path, settings: Settings
) -> None:
    """The first decision wins; a second, a late one and one for no approval each say why."""
    config = _config(tmp_path, _send_then_answer())
    async with LocalStack(settings, config), HiveClient(settings.nats_url or "", settings) as c:
        log = TaskEvents(WAIT_S)
        await log.follow(await jetstream(c.broker), "dup-1")
        await c.submit(_task("dup-1"))
        [request] = await log.wait("approval_requested")
        ap = request["approval_id"]
        await _decide(c, "dup-1", ap, Decision.APPROVE)
        second = await _decide(c, "dup-1", ap, Decision.REJECT, by="bob", reason="no")
        [refused] = await log.wait("approval_refused", lambda e: e["decision_event_id"] == second)
        assert refused["code"] == RefusalCode.ALREADY_DECIDED
        result = await _finish(c, log)
        late = await _decide(c, "dup-1", ap, Decision.REJECT, by="carol", reason="late")
        [too_late] = await log.wait("approval_refused", lambda e: e["decision_event_id"] == late)
        ghost = await _decide(c, "dup-1", "ap-0000000000000000", Decision.APPROVE)
        [unknown] = await log.wait("approval_refused", lambda e: e["decision_event_id"] == ghost)
    assert too_late["code"] in {RefusalCode.ALREADY_DECIDED, RefusalCode.TASK_ENDED}
    assert unknown["code"] == RefusalCode.UNKNOWN
    assert result.status == TaskStatus.COMPLETED
    assert len(_outbox(tmp_path)) == 1
    assert len(log.of("approval_resolved")) == 1


async def test_a_decision_sent_before_the_pause_is_not_lost(
    tmp_path: Path, settings: Settings
) -> None:
    """Approve by the deterministic id before the run has even asked: it applies once asked."""
    turns = [{"tool": "send_email", "args": EMAIL, "delay_s": 1.0}, {"text": "done"}]
    config = _config(tmp_path, turns)
    async with LocalStack(settings, config), HiveClient(settings.nats_url or "", settings) as c:
        log = TaskEvents(WAIT_S)
        await log.follow(await jetstream(c.broker), "early-1")
        await c.submit(_task("early-1"))
        await _decide(
            c, "early-1", approval_id("early-1", "send", 1, 1, "call_1"), Decision.APPROVE
        )
        result = await _finish(c, log)
    assert result.status == TaskStatus.COMPLETED
    assert len(_outbox(tmp_path)) == 1
    assert log.of("approval_refused") == []


async def test_two_waiting_sub_tasks_answered_in_the_opposite_order(
    tmp_path: Path, settings: Settings
) -> None:
    """Each decision resolves its own approval only, whatever the order."""
    config = _config(tmp_path, _send_then_answer(), concurrency=1)
    async with LocalStack(settings, config), HiveClient(settings.nats_url or "", settings) as c:
        log = TaskEvents(WAIT_S)
        await log.follow(await jetstream(c.broker), "two-1")
        await c.submit(_task("two-1", ["first", "second"]))
        requests = await log.wait("approval_requested", count=2)
        by_subtask = {r["subtask_id"]: r["approval_id"] for r in requests}
        await _decide(c, "two-1", by_subtask["second"], Decision.REJECT, reason="no")
        await log.wait("approval_resolved")
        await _decide(c, "two-1", by_subtask["first"], Decision.APPROVE)
        result = await _finish(c, log)
    decisions = {s.id: [a.decision for a in s.approvals] for s in result.subtasks}
    assert decisions == {"first": [Decision.APPROVE], "second": [Decision.REJECT]}
    assert len(_outbox(tmp_path)) == 1


async def test_two_calls_of_one_turn_are_asked_at_once_and_answered_each_by_id(
    tmp_path: Path, settings: Settings
) -> None:
    """Both calls of one answer wait together; approve one, reject the other: one email."""
    other = {**EMAIL, "to": "other@example.com"}
    turns = [
        {"calls": [{"tool": "send_email", "args": EMAIL}, {"tool": "send_email", "args": other}]},
        {"text": "done"},
    ]
    config = _config(tmp_path, turns)
    async with LocalStack(settings, config), HiveClient(settings.nats_url or "", settings) as c:
        log = TaskEvents(WAIT_S)
        await log.follow(await jetstream(c.broker), "pair-1")
        await c.submit(_task("pair-1"))
        requests = await log.wait("approval_requested", count=2)
        ids = {r["arguments"]["to"]: r["approval_id"] for r in requests}
        assert all(sorted(r["pause"]) == sorted(ids.values()) for r in requests)
        await _decide(c, "pair-1", ids["other@example.com"], Decision.REJECT, reason="no")
        await log.wait("approval_resolved")
        assert log.of("subtask_finished") == []  # still waiting for the other decision
        await _decide(c, "pair-1", ids["customer@example.com"], Decision.APPROVE)
        result = await _finish(c, log)
    assert result.status == TaskStatus.COMPLETED
    [mail] = _outbox(tmp_path)
    assert "customer@example.com" in mail.read_text(encoding="utf-8")
    decisions = sorted(a.decision for a in result.subtasks[0].approvals)
    assert decisions == [Decision.APPROVE, Decision.REJECT]


async def test_the_worker_is_free_while_a_run_waits(tmp_path: Path, settings: Settings) -> None:
    """With one run at a time, another sub-task completes while the first waits for a person."""
    (tmp_path / "quick.yaml").write_text(json.dumps([{"text": "quick"}]), encoding="utf-8")
    config = _config(tmp_path, _send_then_answer(), concurrency=1, allow_models=["scripted:*"])
    body = _task("free-1", ["send"])
    body["plan"]["subtasks"].append(
        {"id": "other", "role": "mailer", "prompt": "p", "model": "scripted:quick.yaml"}
    )
    async with LocalStack(settings, config), HiveClient(settings.nats_url or "", settings) as c:
        log = TaskEvents(WAIT_S)
        await log.follow(await jetstream(c.broker), "free-1")
        await c.submit(body)
        [request] = await log.wait("approval_requested")
        await log.wait("subtask_finished", lambda e: e["subtask_id"] == "other")
        assert log.of("approval_resolved") == []  # the other one finished while this waited
        await _decide(c, "free-1", request["approval_id"], Decision.APPROVE)
        result = await _finish(c, log)
    assert result.status == TaskStatus.COMPLETED


async def test_an_approval_nobody_answers_times_out_as_a_rejection(
    tmp_path: Path, settings: Settings
) -> None:
    """After `approval_timeout_s` the approval resolves as `reject` by hivebus; the run goes on."""
    config = _config(tmp_path, _send_then_answer(), approval_timeout_s=2)
    async with LocalStack(settings, config), HiveClient(settings.nats_url or "", settings) as c:
        log = TaskEvents(WAIT_S)
        await log.follow(await jetstream(c.broker), "late-1")
        await c.submit(_task("late-1"))
        [request] = await log.wait("approval_requested")
        [resolved] = await log.wait("approval_resolved")
        result = await _finish(c, log)
        late = await _decide(c, "late-1", request["approval_id"], Decision.APPROVE)
        [refused] = await log.wait("approval_refused", lambda e: e["decision_event_id"] == late)
    event = ApprovalResolved.model_validate(resolved)
    assert (event.decision, event.by, event.timed_out) == (Decision.REJECT, "hivebus", True)
    assert event.reason == "approval timed out"
    assert result.status == TaskStatus.COMPLETED
    assert _outbox(tmp_path) == []
    assert refused["code"] in {RefusalCode.ALREADY_DECIDED, RefusalCode.TASK_ENDED}


async def test_ask_human_gets_the_answer_as_its_result(tmp_path: Path, settings: Settings) -> None:
    """`ask_human` pauses for a question; `respond` becomes the tool's result."""
    turns = [{"tool": "ask_human", "args": {"question": "Which plan?"}}, {"text": "done"}]
    config = _config(tmp_path, turns)
    async with LocalStack(settings, config), HiveClient(settings.nats_url or "", settings) as c:
        log = TaskEvents(WAIT_S)
        await log.follow(await jetstream(c.broker), "ask-1")
        await c.submit(_task("ask-1"))
        [request] = await log.wait("approval_requested")
        assert request["approval_kind"] == "question"
        assert request["question"] == "Which plan?"
        await _decide(c, "ask-1", request["approval_id"], Decision.RESPOND, answer="the gold one")
        result = await _finish(c, log)
    assert result.status == TaskStatus.COMPLETED
    [step] = [e for e in log.of("step") if e["step_kind"] == "tool"]
    assert step["output"]["data"]["answer"] == "the gold one"


@pytest.mark.parametrize(
    ("how", "ending"), [("cancel", TaskStatus.CANCELLED), ("deadline", TaskStatus.TIMEOUT)]
)
async def test_cancel_and_deadline_end_a_waiting_sub_task(
    tmp_path: Path, settings: Settings, how: str, ending: TaskStatus
) -> None:
    """The task's cancel or deadline wins while a sub-task waits; a later decision is refused."""
    config = _config(tmp_path, _send_then_answer(), limits={"max_wall_s": 3})
    budget = {"deadline_s": 3} if how == "deadline" else {}
    async with LocalStack(settings, config), HiveClient(settings.nats_url or "", settings) as c:
        log = TaskEvents(WAIT_S)
        await log.follow(await jetstream(c.broker), "stop-1")
        await c.submit(_task("stop-1", **budget))
        [request] = await log.wait("approval_requested")
        if how == "cancel":
            await c.cancel("stop-1", "changed my mind")
        result = await _finish(c, log)
        after = await _decide(c, "stop-1", request["approval_id"], Decision.APPROVE)
        [refused] = await log.wait("approval_refused", lambda e: e["decision_event_id"] == after)
    assert result.status == ending
    assert result.subtasks[0].status in {SubTaskStatus.CANCELLED, SubTaskStatus.TIMEOUT}
    assert refused["code"] in {RefusalCode.TASK_ENDED, RefusalCode.EXPIRED}
    assert _outbox(tmp_path) == []


async def test_resume_without_budget_left_refuses_the_approved_call(
    tmp_path: Path, settings: Settings
) -> None:
    """Approved while waiting, but the task budget was spent meanwhile: the call is not run."""
    # The spender's call fits beside the paused run's first one; after it, the resumed run's
    # next model call no longer does.
    big = {"usage": {"input_tokens": 600, "output_tokens": 100}}
    (tmp_path / "spender.yaml").write_text(json.dumps([{"text": "spent", **big}]), "utf-8")
    config = _config(
        tmp_path,
        _send_then_answer(),
        allow_models=["scripted:*"],
        limits={"max_tokens": 1000},
    )
    body = _task("broke-1", ["send"], max_tokens=1000)
    body["plan"]["subtasks"].append(
        {"id": "spend", "role": "mailer", "prompt": "p", "model": "scripted:spender.yaml"}
    )
    async with LocalStack(settings, config), HiveClient(settings.nats_url or "", settings) as c:
        log = TaskEvents(WAIT_S)
        await log.follow(await jetstream(c.broker), "broke-1")
        await c.submit(body)
        [request] = await log.wait("approval_requested")
        await log.wait("subtask_finished", lambda e: e["subtask_id"] == "spend")
        await _decide(
            c, "broke-1", request["approval_id"], Decision.MODIFY, arguments={**EMAIL, "body": "x"}
        )
        [refused] = await log.wait("approval_refused", lambda e: e["decision_event_id"] is None)
        result = await _finish(c, log)
    assert refused["code"] == RefusalCode.BUDGET
    send = next(s for s in result.subtasks if s.id == "send")
    assert send.status == SubTaskStatus.BUDGET_EXCEEDED
    assert _outbox(tmp_path) == []
    assert isinstance(ApprovalRefused.model_validate(refused), ApprovalRefused)
