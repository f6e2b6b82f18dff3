"""The orchestrator's approval handling on a real nats-server, the agent played by hand.

The test takes the dispatch from WORK as the role's agent would, publishes `ApprovalRequested`
on EVENTS as a paused run does, sends decisions on CONTROL as a person does, and reads what
the orchestrator published: `ApprovalResolved` / `ApprovalRefused` on EVENTS and the resumed
`SubTaskAssigned` on WORK.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hivetest import TaskEvents, provision_bus, write_config
from nats.js import JetStreamContext

from hivebus.contracts import (
    ApprovalDecided,
    ApprovalKind,
    ApprovalRecord,
    ApprovalRequested,
    ApprovalStatus,
    CancelRequested,
    Decision,
    RefusalCode,
    SubTaskAssigned,
    SubTaskStarted,
    SubTaskStatus,
    TaskStatus,
    TaskSubmitted,
    Tier,
    approval_id,
    subjects,
)
from hivebus.core import Publisher, Settings, jetstream, new_broker
from hivebus.core import kv as kvcas
from hivebus.orchestrator.service import start_orchestrator

pytestmark = pytest.mark.e2e

WAIT_S = 20.0
"""Bound on waiting for any one message."""

ROLE = "mailer"
EMAIL = {"to": "customer@example.com", "subject": "Your refund"}
SCHEMA = {
    "type": "object",
    "properties": {"to": {"type": "string"}, "subject": {"type": "string"}},
    "required": ["to", "subject"],
}


class Hand:
    """The role's agent and a person, played by the test on one connection."""

    def __init__(self, js: JetStreamContext, publisher: Publisher) -> None:
        """Pull work as the role's durable consumer; publish through `publisher`."""
        self.js = js
        self.publisher = publisher
        self.work: Any = None

    async def next_work(self) -> SubTaskAssigned:
        """The next dispatch for the role, acked as an agent acks a run that paused."""
        if self.work is None:
            self.work = await self.js.pull_subscribe(
                subjects.work(ROLE), durable=subjects.agent_consumer(ROLE), stream="WORK"
            )
        [msg] = await self.work.fetch(1, timeout=WAIT_S)
        await msg.ack()
        return SubTaskAssigned.model_validate_json(msg.data)

    async def pause(
        self, assignment: SubTaskAssigned, call: str, expires_in_s: float, pause: list[str]
    ) -> ApprovalRequested:
        """Start the run and pause it before a `send_email` call, as the agent does."""
        run = f"run-{assignment.subtask_id}"
        started = SubTaskStarted(
            task_id=assignment.task_id,
            subtask_id=assignment.subtask_id,
            attempt=assignment.attempt,
            run_id=run,
            role=ROLE,
            model="scripted:x",
        )
        await self.publisher.publish(started)
        request = ApprovalRequested(
            task_id=assignment.task_id,
            approval_id=approval_id(assignment.task_id, assignment.subtask_id, 1, 1, call),
            subtask_id=assignment.subtask_id,
            attempt=assignment.attempt,
            run_id=run,
            role=ROLE,
            step=1,
            call_id=call,
            approval_kind=ApprovalKind.TOOL_CALL,
            tool="send_email",
            tier=Tier.WRITE_RISKY,
            arguments=EMAIL,
            args_schema=SCHEMA,
            allowed_decisions=[Decision.APPROVE, Decision.REJECT, Decision.MODIFY],
            expires_at=datetime.now(UTC) + timedelta(seconds=expires_in_s),
            pause=pause,
        )
        await self.publisher.publish(request)
        return request

    async def decide(self, task_id: str, ap: str, decision: Decision, **fields: Any) -> str:
        """A person's decision on CONTROL; returns its event id."""
        decided = ApprovalDecided(
            task_id=task_id,
            approval_id=ap,
            decision=decision,
            by=fields.pop("by", "alice"),
            **fields,
        )
        await self.publisher.publish(decided)
        return decided.event_id


@pytest.fixture
async def hand(tmp_path: Path, settings: Settings) -> AsyncIterator[Hand]:
    """A provisioned server, the real orchestrator started in this process, and the test's hand."""
    config = write_config(tmp_path, {ROLE: {"system": "s", "model": "scripted:x.yaml"}})
    fast = settings.model_copy(update={"nak_delay_s": 0.2})
    url = fast.nats_url or ""
    await provision_bus(url, fast, [ROLE])
    orchestrator = await start_orchestrator(fast, config, url)
    client = new_broker(url, "test-hand", fast)
    try:
        await client.connect()
        yield Hand(await jetstream(client), Publisher(client, 5.0))
    finally:
        await client.stop()
        await orchestrator.stop()


async def _submit(hand: Hand, task_id: str, sids: list[str]) -> TaskEvents:
    events = TaskEvents(WAIT_S)
    await events.follow(hand.js, task_id)
    subtasks = [{"id": sid, "role": ROLE, "prompt": "reply"} for sid in sids]
    await hand.publisher.publish(
        TaskSubmitted.model_validate(
            {"task_id": task_id, "goal": "answer", "plan": {"subtasks": subtasks}}
        )
    )
    return events


async def _record(hand: Hand, task_id: str, ap: str) -> ApprovalRecord | None:
    tasks = await hand.js.key_value(subjects.TASKS_BUCKET)
    record, _ = await kvcas.read(tasks, subjects.approval_key(task_id, ap), ApprovalRecord)
    return record


async def test_a_decision_resolves_the_approval_and_resumes_the_run(hand: Hand) -> None:
    """Request, then approve: `ApprovalResolved` on EVENTS, the resume on WORK.

    A second decision is refused `already_decided`.
    """
    events = await _submit(hand, "ap-e2e-1", ["send"])
    first = await hand.next_work()
    assert first.resume == []
    ap = approval_id("ap-e2e-1", "send", 1, 1, "call_1")
    request = await hand.pause(first, "call_1", expires_in_s=3600, pause=[ap])
    await events.wait("approval_requested")
    alice = await hand.decide("ap-e2e-1", request.approval_id, Decision.APPROVE, reason="fine")
    [resolved] = await events.wait("approval_resolved")
    resumed = await hand.next_work()
    bob = await hand.decide("ap-e2e-1", request.approval_id, Decision.REJECT, by="bob")
    [refused] = await events.wait("approval_refused")
    assert (resolved["decision"], resolved["by"], resolved["decision_event_id"]) == (
        "approve",
        "alice",
        alice,
    )
    assert (resumed.subtask_id, resumed.attempt) == ("send", 1)
    assert [r.approval_id for r in resumed.resume] == [request.approval_id]
    assert resumed.resume[0].decision is Decision.APPROVE
    assert subjects.address(resumed).msg_id != subjects.address(first).msg_id
    assert (refused["code"], refused["decision_event_id"]) == (RefusalCode.ALREADY_DECIDED, bob)
    record = await _record(hand, "ap-e2e-1", request.approval_id)
    assert record is not None
    assert record.status is ApprovalStatus.RESOLVED
    assert len(events.of("approval_resolved")) == 1


async def test_an_approval_nobody_decides_expires_as_a_reject_by_hivebus(hand: Hand) -> None:
    """`expires_at` two seconds ahead: the durable expiry resolves it `reject` by hivebus."""
    events = await _submit(hand, "ap-e2e-2", ["send"])
    first = await hand.next_work()
    asked = datetime.now(UTC)
    request = await hand.pause(first, "call_1", expires_in_s=2, pause=[])
    [resolved] = await events.wait("approval_resolved")
    resumed = await hand.next_work()
    assert (resolved["decision"], resolved["by"], resolved["timed_out"]) == (
        "reject",
        "hivebus",
        True,
    )
    assert resolved["reason"] == "approval timed out"
    assert datetime.fromisoformat(resolved["decided_at"]) >= request.expires_at
    assert datetime.now(UTC) - asked < timedelta(seconds=WAIT_S)
    [resolution] = resumed.resume
    assert (resolution.approval_id, resolution.timed_out) == (request.approval_id, True)
    late = await hand.decide("ap-e2e-2", request.approval_id, Decision.APPROVE)
    [refused] = await events.wait("approval_refused", lambda e: e["decision_event_id"] == late)
    assert refused["code"] == RefusalCode.ALREADY_DECIDED


async def test_two_decisions_at_once_resolve_once(hand: Hand) -> None:
    """Two people decide together: exactly one `ApprovalResolved`, the other refused."""
    events = await _submit(hand, "ap-e2e-3", ["send"])
    first = await hand.next_work()
    request = await hand.pause(first, "call_1", expires_in_s=3600, pause=[])
    await events.wait("approval_requested")
    await asyncio.gather(
        *(
            hand.decide("ap-e2e-3", request.approval_id, decision, by=who)
            for decision, who in ((Decision.APPROVE, "alice"), (Decision.REJECT, "bob"))
        )
    )
    [refused] = await events.wait("approval_refused")
    [resolved] = await events.wait("approval_resolved")
    resumed = await hand.next_work()
    assert refused["code"] == RefusalCode.ALREADY_DECIDED
    assert {refused["by"], resolved["by"]} == {"alice", "bob"}
    assert resumed.resume[0].by == resolved["by"]


async def test_early_decisions_wait_for_the_request_and_the_first_sent_wins(
    hand: Hand,
) -> None:
    """Two decisions sent before the run asked are kept back; once it asks, the first wins."""
    events = await _submit(hand, "ap-e2e-4", ["send"])
    first = await hand.next_work()
    ap = approval_id("ap-e2e-4", "send", 1, 1, "call_1")
    alice = await hand.decide("ap-e2e-4", ap, Decision.REJECT, reason="not today")
    bob = await hand.decide("ap-e2e-4", ap, Decision.APPROVE, by="bob")
    consumer = subjects.orchestrator_control_consumer(subjects.ControlKind.APPROVAL)
    async with asyncio.timeout(WAIT_S):  # the decisions were tried, and put back, before the ask
        while (await hand.js.consumer_info("CONTROL", consumer)).num_redelivered < 2:  # noqa: ASYNC110 - a server-side count
            await asyncio.sleep(0.05)
    await hand.pause(first, "call_1", expires_in_s=3600, pause=[ap])
    [resolved] = await events.wait("approval_resolved")
    resumed = await hand.next_work()
    [refused] = await events.wait("approval_refused")
    assert (resolved["decision_event_id"], resolved["reason"]) == (alice, "not today")
    assert resumed.resume[0].decision_event_id == alice
    assert (refused["decision_event_id"], refused["code"]) == (bob, RefusalCode.ALREADY_DECIDED)


async def test_a_cancel_while_waiting_ends_the_task_and_refuses_later_decisions(
    hand: Hand,
) -> None:
    """Cancelled while the sub-task waits: the task ends `cancelled`, the approval closed."""
    events = await _submit(hand, "ap-e2e-5", ["send"])
    first = await hand.next_work()
    request = await hand.pause(first, "call_1", expires_in_s=3600, pause=[])
    await events.wait("approval_requested")

    async def waiting() -> bool:
        record = await _record(hand, "ap-e2e-5", request.approval_id)
        return record is not None

    async with asyncio.timeout(WAIT_S):
        while not await waiting():  # noqa: ASYNC110 - server-side state
            await asyncio.sleep(0.05)
    await hand.publisher.publish(CancelRequested(task_id="ap-e2e-5", reason="changed my mind"))
    [finished] = await events.wait("task_finished")
    late = await hand.decide("ap-e2e-5", request.approval_id, Decision.APPROVE)
    [refused] = await events.wait("approval_refused", lambda e: e["decision_event_id"] == late)
    assert finished["status"] == TaskStatus.CANCELLED
    assert [s["status"] for s in finished["subtasks"]] == [SubTaskStatus.CANCELLED]
    assert refused["code"] == RefusalCode.TASK_ENDED
    record = await _record(hand, "ap-e2e-5", request.approval_id)
    assert record is not None
    assert record.status is ApprovalStatus.CLOSED
