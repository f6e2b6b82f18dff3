"""Approvals through the orchestrator's handlers, on an in-memory store and a recording sink.

Each test plays the agent (a request), people (decisions), the server (an expiry that comes
due) and JetStream (a redelivery after an error), and looks at what was published and stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from hivebus.contracts import (
    ApprovalDecided,
    ApprovalExpired,
    ApprovalKind,
    ApprovalRecord,
    ApprovalRefused,
    ApprovalRequested,
    ApprovalResolved,
    ApprovalStatus,
    Decision,
    RefusalCode,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskState,
    SubTaskStatus,
    TaskFinished,
    TaskStatus,
    Tier,
    Usage,
    approval_id,
    subjects,
)
from hivebus.contracts.knowledge import NoteWrite
from hivebus.core import HivebusConfig, telemetry
from hivebus.core.settle import Settlement, settlement_for
from hivebus.orchestrator import MemoryStore, Pauses, Scheduler
from hivebus.orchestrator.early import MemoryDecisionLog
from hivebus.orchestrator.pauses import DecisionBeforeRequestError, ExpiryNotDueError
from hivebus.orchestrator.state import RecordChange

S = SubTaskStatus
TASK = "t1"
START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
EARLY_WAIT_S = 30.0
TIMEOUT = timedelta(hours=1)
EMAIL = {"to": "a@example.com", "subject": "hi"}
EMAIL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"to": {"type": "string"}, "subject": {"type": "string"}},
    "required": ["to", "subject"],
}
MessageT = TypeVar("MessageT", bound=BaseModel)


class Clock:
    """Wall time that moves only when a test moves it."""

    def __init__(self) -> None:
        """Start at `START`."""
        self.at = START

    def now(self) -> datetime:
        """The current fake time."""
        return self.at

    def monotonic(self) -> float:
        """Seconds since `START`."""
        return (self.at - START).total_seconds()


class Notes:
    """Every dependency note is committed."""

    async def committed(self, write_id: str) -> bool | None:  # noqa: ARG002 - the protocol
        """Yes."""
        return True


class BusDownError(RuntimeError):
    """The fake bus refused a publish."""


class Sink:
    """Every message published, in order; can refuse the next publish of one kind."""

    def __init__(self) -> None:
        """Nothing published."""
        self.sent: list[BaseModel] = []
        self.fail_next: set[type[BaseModel]] = set()

    async def publish(self, message: BaseModel) -> None:
        """Keep `message`, unless a failure of its kind was asked for."""
        if type(message) in self.fail_next:
            self.fail_next.discard(type(message))
            raise BusDownError(f"publish of {type(message).__name__} failed")
        self.sent.append(message)

    def of(self, kind: type[MessageT]) -> list[MessageT]:
        """The messages of one kind, in order."""
        return [m for m in self.sent if isinstance(m, kind)]

    def ids(self, kind: type[BaseModel]) -> list[str]:
        """The `Nats-Msg-Id` of each message of one kind: what the bus deduplicates by."""
        return [subjects.address(m).msg_id for m in self.of(kind)]

    def delivered(self, kind: type[MessageT]) -> list[MessageT]:
        """The distinct messages of one kind, as the bus keeps them (one per message id)."""
        seen: dict[str, MessageT] = {}
        for message in self.of(kind):
            seen.setdefault(subjects.address(message).msg_id, message)
        return list(seen.values())


class Desk:
    """A scheduler and its approval handling on fakes, with a sub-task `send` dispatched."""

    def __init__(self, config: HivebusConfig, store: MemoryStore | None = None) -> None:
        """Wire the scheduler to in-memory fakes."""
        self.store = store or MemoryStore()
        self.sink = Sink()
        self.clock = Clock()
        self.scheduler = Scheduler(self.store, self.sink, config, Notes(), clock=self.clock)
        self.control = MemoryDecisionLog()
        self.pauses = Pauses(self.scheduler, self.control, EARLY_WAIT_S)

    async def submit(self, *sids: str) -> None:
        """Submit a task of independent sub-tasks (all dispatched at once)."""
        subtasks = [{"id": sid, "role": "writer", "prompt": f"do {sid}"} for sid in sids]
        await self.scheduler.submit(
            {"task_id": TASK, "goal": "Mail.", "plan": {"subtasks": subtasks}}, TASK
        )

    async def start(self, sid: str = "send", attempt: int = 1) -> None:
        """The agent's `SubTaskStarted`."""
        await self.scheduler.started(
            SubTaskStarted(
                task_id=TASK,
                subtask_id=sid,
                attempt=attempt,
                run_id=f"run-{sid}",
                role="writer",
                model="scripted:x",
            )
        )

    async def finish(self, sid: str = "send", status: SubTaskStatus = S.COMPLETED) -> None:
        """The agent's `SubTaskFinished`."""
        await self.scheduler.finished(
            SubTaskFinished(
                task_id=TASK,
                subtask_id=sid,
                attempt=1,
                run_id=f"run-{sid}",
                role="writer",
                status=status,
                reason="sent",
                output=f"{sid} done",
                usage=Usage(steps=2),
            )
        )

    def request(
        self,
        call: str = "call-1",
        sid: str = "send",
        *,
        pause: list[str] | None = None,
        **fields: Any,
    ) -> ApprovalRequested:
        """What the agent publishes when the run pauses before `send_email`."""
        defaults: dict[str, Any] = {
            "approval_kind": ApprovalKind.TOOL_CALL,
            "tool": "send_email",
            "tier": Tier.WRITE_RISKY,
            "arguments": EMAIL,
            "args_schema": EMAIL_SCHEMA,
            "allowed_decisions": [Decision.APPROVE, Decision.REJECT, Decision.MODIFY],
            "expires_at": self.clock.now() + TIMEOUT,
            "attempt": 1,
        }
        fields = {**defaults, **fields}
        return ApprovalRequested(
            task_id=TASK,
            approval_id=approval_id(TASK, sid, fields["attempt"], 1, call),
            subtask_id=sid,
            run_id=f"run-{sid}",
            role="writer",
            step=1,
            call_id=call,
            pause=pause or [],
            **fields,
        )

    async def ask(self, *requests: ApprovalRequested) -> None:
        """Deliver requests."""
        for req in requests:
            await self.pauses.requested(req)

    def send(
        self, ap: str, decision: Decision = Decision.APPROVE, **fields: Any
    ) -> ApprovalDecided:
        """Store a person's decision on CONTROL, just now, without delivering it; return it."""
        event = ApprovalDecided(
            task_id=TASK, approval_id=ap, decision=decision, by=fields.pop("by", "alice"), **fields
        )
        self.control.add(event, self.clock.now())
        return event

    async def decide(
        self, ap: str, decision: Decision = Decision.APPROVE, **fields: Any
    ) -> ApprovalDecided:
        """Store a person's decision on CONTROL and deliver it; return it."""
        event = self.send(ap, decision, **fields)
        await self.pauses.decided(event, received_at=self.clock.now())
        return event

    async def redeliver(self, event: ApprovalDecided, stored_at: datetime = START) -> None:
        """Deliver a stored decision again."""
        await self.pauses.decided(event, received_at=stored_at)

    async def expire(self, req: ApprovalRequested) -> None:
        """Deliver the request's scheduled expiry, its time come."""
        self.clock.at = max(self.clock.at, req.expires_at)
        await self.pauses.expired(
            ApprovalExpired(
                task_id=TASK,
                approval_id=req.approval_id,
                subtask_id=req.subtask_id,
                expires_at=req.expires_at,
            )
        )

    async def record(self, ap: str) -> ApprovalRecord:
        """The stored record of `ap`."""
        record = await self.store.read_approval(TASK, ap)
        assert record is not None
        return record

    async def state(self, sid: str = "send") -> SubTaskState:
        """One sub-task's stored state."""
        state = await self.store.read_subtask(TASK, sid)
        assert state is not None
        return state

    def refusals(self) -> list[tuple[str, RefusalCode]]:
        """Every refusal: (the refused decision's id, the code)."""
        return [(r.decision_event_id or "-", r.code) for r in self.sink.of(ApprovalRefused)]

    def resumes(self, sid: str = "send") -> list[SubTaskAssigned]:
        """The dispatches of `sid` that resume a paused run, as the bus keeps them."""
        return [a for a in self.sink.delivered(SubTaskAssigned) if a.subtask_id == sid and a.resume]


@pytest.fixture
async def desk(hive_config: HivebusConfig) -> Desk:
    """A task of one sub-task `send`, dispatched and running."""
    desk = Desk(hive_config)
    await desk.submit("send")
    await desk.start()
    return desk


async def redeliver(handle: Callable[[], Awaitable[None]], attempts: int = 3) -> None:
    """Deliver like JetStream: an error (what the settler naks) means it comes again."""
    for _ in range(attempts):
        try:
            await handle()
        except BusDownError:
            continue
        return
    pytest.fail(f"still failing after {attempts} deliveries")


# -- the request ---------------------------------------------------------------------------


async def test_a_request_pauses_the_subtask_and_schedules_its_expiry(desk: Desk) -> None:
    """The record is pending, the sub-task awaits it, and the expiry is scheduled for when due."""
    req = desk.request()
    await desk.ask(req)
    record = await desk.record(req.approval_id)
    assert (record.status, record.request) == (ApprovalStatus.PENDING, req)
    state = await desk.state()
    assert (state.status, state.pending_approvals) == (S.AWAITING_APPROVAL, [req.approval_id])
    [expiry] = desk.sink.of(ApprovalExpired)
    assert (expiry.approval_id, expiry.expires_at) == (req.approval_id, req.expires_at)
    where = subjects.address(expiry)
    assert where.schedule_target == subjects.control(TASK, subjects.ControlKind.APPROVAL_EXPIRED)
    assert where.schedule_at is not None
    assert where.schedule_at >= req.expires_at


async def test_a_repeated_request_changes_nothing(desk: Desk) -> None:
    """The same request again (a redelivery, or asked again after a crash) writes nothing."""
    req = desk.request()
    await desk.ask(req)
    writes = desk.store.writes
    await desk.ask(req, req.model_copy(update={"event_id": "asked-again"}))
    assert desk.store.writes == writes
    assert len(desk.sink.delivered(ApprovalExpired)) == 1
    assert (await desk.record(req.approval_id)).request == req


async def test_a_request_for_a_stale_attempt_is_closed(desk: Desk) -> None:
    """A request of an attempt the sub-task is not on is closed, and the sub-task unchanged."""
    before = await desk.state()
    stale = desk.request(attempt=2)
    await desk.ask(stale)
    assert await desk.state() == before
    record = await desk.record(stale.approval_id)
    assert record.status is ApprovalStatus.CLOSED
    assert "not waiting" in record.closed_reason
    assert desk.sink.of(ApprovalExpired) == []


async def test_a_request_for_an_unknown_subtask_or_task_is_ignored(desk: Desk) -> None:
    """No plan names the sub-task (or the task): nothing is stored or published."""
    writes, sent = desk.store.writes, len(desk.sink.sent)
    await desk.ask(desk.request(sid="ghost"))
    await desk.ask(desk.request().model_copy(update={"task_id": "nobody"}))
    assert (desk.store.writes, len(desk.sink.sent)) == (writes, sent)


# -- decisions -----------------------------------------------------------------------------


async def test_the_first_valid_decision_wins_and_resumes_the_run(desk: Desk) -> None:
    """Approve: `ApprovalResolved`, then the same attempt dispatched again with the resolution."""
    req = desk.request()
    await desk.ask(req)
    decision = await desk.decide(req.approval_id, reason="fine")
    [resolved] = desk.sink.of(ApprovalResolved)
    assert (resolved.decision, resolved.by, resolved.reason) == (Decision.APPROVE, "alice", "fine")
    assert resolved.decision_event_id == decision.event_id
    [first, again] = desk.sink.delivered(SubTaskAssigned)
    assert first.resume == []
    assert (again.attempt, again.resume) == (1, [resolved])
    assert (again.prompt, again.role, again.limits) == (first.prompt, first.role, first.limits)
    assert subjects.address(again).msg_id != subjects.address(first).msg_id
    state = await desk.state()
    assert (state.status, state.pending_approvals) == (S.DISPATCHED, [])
    assert [a.decision for a in state.approvals] == [Decision.APPROVE]
    record = await desk.record(req.approval_id)
    assert (record.status, record.resolution) == (ApprovalStatus.RESOLVED, resolved)
    assert desk.refusals() == []


async def test_a_second_decision_is_refused_already_decided(desk: Desk) -> None:
    """After the first decision, another one (even the same one again) changes nothing."""
    req = desk.request()
    await desk.ask(req)
    await desk.decide(req.approval_id)
    writes = desk.store.writes
    reject = await desk.decide(req.approval_id, Decision.REJECT, by="bob")
    same = await desk.decide(req.approval_id)
    assert desk.refusals() == [
        (reject.event_id, RefusalCode.ALREADY_DECIDED),
        (same.event_id, RefusalCode.ALREADY_DECIDED),
    ]
    assert "approve by alice" in desk.sink.of(ApprovalRefused)[0].why
    assert desk.store.writes == writes
    assert len(desk.sink.of(ApprovalResolved)) == 1
    assert len(desk.resumes()) == 1


async def test_a_redelivered_winning_decision_finishes_what_a_crash_left(desk: Desk) -> None:
    """Decided, then the bus failed the resume: the redelivery dispatches it, and only that."""
    req = desk.request()
    await desk.ask(req)
    decision = ApprovalDecided(
        task_id=TASK, approval_id=req.approval_id, decision=Decision.APPROVE, by="alice"
    )
    desk.sink.fail_next.add(SubTaskAssigned)
    await redeliver(lambda: desk.pauses.decided(decision, received_at=desk.clock.now()))
    await desk.pauses.decided(decision, received_at=desk.clock.now())  # and once more
    assert desk.refusals() == []
    resolutions = desk.sink.of(ApprovalResolved)
    assert len(resolutions) == 3
    assert len(set(desk.sink.ids(ApprovalResolved))) == 1, "the same message each time"
    assert all(r == resolutions[0] for r in resolutions)
    [resume] = desk.resumes()
    assert resume.resume == [resolutions[0]]
    assert (await desk.state()).status == S.DISPATCHED


async def test_a_lost_compare_and_set_race_is_refused_already_decided(
    hive_config: HivebusConfig,
) -> None:
    """Two decisions judged at once: exactly one is written, the other refused `already_decided`."""

    class RacedStore(MemoryStore):
        """Another orchestrator writes its decision between this one's read and its write."""

        rival: RecordChange | None = None

        async def update_approval(
            self, task_id: str, approval: str, change: RecordChange
        ) -> ApprovalRecord | None:
            rival, self.rival = self.rival, None
            if rival is not None:
                await super().update_approval(task_id, approval, rival)
            return await super().update_approval(task_id, approval, change)

    store = RacedStore()
    desk = Desk(hive_config, store)
    await desk.submit("send")
    req = desk.request()
    await desk.ask(req)
    bob = ApprovalDecided(
        task_id=TASK, approval_id=req.approval_id, decision=Decision.REJECT, by="bob"
    )
    bobs = ApprovalResolved(
        task_id=TASK,
        approval_id=req.approval_id,
        subtask_id="send",
        attempt=1,
        decision=Decision.REJECT,
        by="bob",
        decision_event_id=bob.event_id,
        decided_at=START,
        expires_at=req.expires_at,
    )

    def bob_wins(cur: ApprovalRecord | None) -> ApprovalRecord | None:
        assert cur is not None
        assert cur.status is ApprovalStatus.PENDING
        return cur.model_copy(update={"status": ApprovalStatus.RESOLVED, "resolution": bobs})

    store.rival = bob_wins
    alice = await desk.decide(req.approval_id)
    assert desk.refusals() == [(alice.event_id, RefusalCode.ALREADY_DECIDED)]
    assert "reject by bob" in desk.sink.of(ApprovalRefused)[0].why
    assert (await desk.record(req.approval_id)).resolution == bobs
    assert desk.sink.of(ApprovalResolved) == [], "the loser announces nothing"
    await desk.pauses.decided(bob)  # the winner's handler goes on
    assert [r.resume for r in desk.resumes()] == [[bobs]]


async def test_schema_invalid_modify_is_refused_naming_the_field_and_changes_nothing(
    desk: Desk,
) -> None:
    """`modify` with `to: 42` is `invalid` (naming `to`); a valid `modify` still wins after it."""
    req = desk.request()
    await desk.ask(req)
    writes = desk.store.writes
    bad = await desk.decide(req.approval_id, Decision.MODIFY, arguments={"to": 42, "subject": "x"})
    [refused] = desk.sink.of(ApprovalRefused)
    assert (refused.decision_event_id, refused.code) == (bad.event_id, RefusalCode.INVALID)
    assert "to: 42 is not of type 'string'" in refused.why
    assert desk.store.writes == writes
    changed = {**EMAIL, "to": "boss@example.com"}
    await desk.decide(req.approval_id, Decision.MODIFY, arguments=changed)
    [resume] = desk.resumes()
    assert resume.resume[0].arguments == changed
    [summary] = (await desk.state()).approvals
    assert summary.arguments_diff == {"to": {"from": "a@example.com", "to": "boss@example.com"}}


async def test_respond_answers_a_question_and_nothing_else(desk: Desk) -> None:
    """`respond` needs a question and an answer; with both, the answer resumes the run."""
    call = desk.request()
    question = desk.request(
        "ask-1",
        approval_kind=ApprovalKind.QUESTION,
        tool="ask_human",
        tier=None,
        arguments={"question": "Which plan?"},
        args_schema=None,
        question="Which plan?",
        allowed_decisions=[Decision.RESPOND, Decision.REJECT],
        pause=[call.approval_id, approval_id(TASK, "send", 1, 1, "ask-1")],
    )
    call = call.model_copy(update={"pause": question.pause})
    await desk.ask(call, question)
    to_call = await desk.decide(call.approval_id, Decision.RESPOND, answer="yes")
    empty = await desk.decide(question.approval_id, Decision.RESPOND)
    approve = await desk.decide(question.approval_id, Decision.APPROVE)
    assert desk.refusals() == [
        (to_call.event_id, RefusalCode.NOT_ALLOWED),
        (empty.event_id, RefusalCode.INVALID),
        (approve.event_id, RefusalCode.NOT_ALLOWED),
    ]
    await desk.decide(question.approval_id, Decision.RESPOND, answer="the gold one")
    await desk.decide(call.approval_id, Decision.REJECT, reason="not now")
    [resume] = desk.resumes()
    assert [(r.decision, r.answer) for r in resume.resume] == [
        (Decision.REJECT, None),
        (Decision.RESPOND, "the gold one"),
    ]


async def test_a_decision_at_expiry_is_refused_expired(desk: Desk) -> None:
    """A decision at `expires_at`, before the expiry message came, is refused `expired`."""
    req = desk.request()
    await desk.ask(req)
    desk.clock.at = req.expires_at
    late = await desk.decide(req.approval_id)
    assert desk.refusals() == [(late.event_id, RefusalCode.EXPIRED)]
    assert (await desk.record(req.approval_id)).status is ApprovalStatus.PENDING


async def test_a_decision_for_an_id_that_is_no_approval_is_unknown(desk: Desk) -> None:
    """An id that could not be a key is refused `unknown` without touching the store."""
    odd = await desk.decide("ap.*.>")
    assert desk.refusals() == [(odd.event_id, RefusalCode.UNKNOWN)]


# -- early decisions -----------------------------------------------------------------------


async def test_an_early_decision_waits_for_its_request_then_wins(desk: Desk) -> None:
    """Decided before the run asked: retried (nak with delay); the request applies it at once."""
    req = desk.request()
    decision = desk.send(req.approval_id)
    with pytest.raises(DecisionBeforeRequestError) as raised:
        await desk.redeliver(decision)
    assert settlement_for(raised.value) is Settlement.NAK
    assert desk.sink.of(ApprovalRefused) == []
    desk.clock.at += timedelta(seconds=EARLY_WAIT_S - 1)
    with pytest.raises(DecisionBeforeRequestError):
        await desk.redeliver(decision)
    await desk.ask(req)
    assert [r.resume[0].decision_event_id for r in desk.resumes()] == [decision.event_id]
    assert desk.sink.of(ApprovalExpired) == [], "resolved: nothing to expire"
    await desk.redeliver(decision)  # the decision's own next delivery finds itself the winner
    assert desk.refusals() == []
    assert len(desk.resumes()) == 1


async def test_a_decision_before_its_task_is_accepted_waits_too(
    hive_config: HivebusConfig,
) -> None:
    """The submission and the decision come through different consumers, in either order.

    A decision handled before its task is accepted waits like any early one (refusing it
    then, while the request would later apply it from the log, would say both).
    """
    desk = Desk(hive_config)
    req = desk.request()
    decision = desk.send(req.approval_id)
    with pytest.raises(DecisionBeforeRequestError):
        await desk.redeliver(decision)
    assert desk.refusals() == []
    await desk.submit("send")
    await desk.start()
    await desk.ask(req)
    assert [r.resume[0].decision_event_id for r in desk.resumes()] == [decision.event_id]
    await desk.redeliver(decision)
    assert desk.refusals() == []


@pytest.mark.parametrize("redelivered", [(0, 1), (1, 0)], ids=["in-order", "reversed"])
async def test_of_two_early_decisions_the_first_sent_wins(
    desk: Desk, redelivered: tuple[int, int]
) -> None:
    """Two decisions sent before the request: the first one stored wins.

    Whichever comes back first, the other is refused `already_decided`.
    """
    req = desk.request()
    sent = [desk.send(req.approval_id, by="alice"), desk.send(req.approval_id, Decision.REJECT)]
    for decision in sent:
        with pytest.raises(DecisionBeforeRequestError):
            await desk.redeliver(decision)
    await desk.ask(req)
    for i in redelivered:
        await desk.redeliver(sent[i])
    [resume] = desk.resumes()
    assert resume.resume[0].decision_event_id == sent[0].event_id
    assert desk.refusals() == [(sent[1].event_id, RefusalCode.ALREADY_DECIDED)]


async def test_an_invalid_early_decision_leaves_the_choice_to_the_next(desk: Desk) -> None:
    """The first decision sent early is invalid: the next valid one resolves at the request."""
    req = desk.request()
    bad = desk.send(req.approval_id, Decision.MODIFY, arguments={"to": 1})
    good = desk.send(req.approval_id, Decision.REJECT, by="bob")
    other = desk.send(desk.request("call-2").approval_id)  # another approval's decision
    await desk.ask(req)
    [resume] = desk.resumes()
    assert resume.resume[0].decision_event_id == good.event_id
    await desk.redeliver(bad)
    assert desk.refusals() == [(bad.event_id, RefusalCode.ALREADY_DECIDED)]
    assert other.approval_id != req.approval_id


async def test_an_early_decision_past_its_wait_or_deliveries_is_unknown(desk: Desk) -> None:
    """No request after the early wait, or at the last delivery: refused `unknown`.

    A request that comes after does not take the refused decision.
    """
    req = desk.request()
    old = desk.send(req.approval_id)
    desk.clock.at += timedelta(seconds=EARLY_WAIT_S)
    await desk.redeliver(old)
    young = desk.send(desk.request("call-2").approval_id, Decision.REJECT, by="bob")
    await desk.pauses.decided(young, received_at=desk.clock.now(), last_delivery=True)
    assert desk.refusals() == [
        (old.event_id, RefusalCode.UNKNOWN),
        (young.event_id, RefusalCode.UNKNOWN),
    ]
    await desk.ask(req)
    assert (await desk.record(req.approval_id)).status is ApprovalStatus.PENDING


async def test_a_decision_for_a_task_that_does_not_run_does_not_wait(desk: Desk) -> None:
    """A task that is over: `unknown` at once; no such task: `unknown` once past the wait."""
    await desk.scheduler.stop(TASK, TaskStatus.CANCELLED, "stop")
    ap = desk.request("call-9").approval_id
    gone = await desk.decide(ap)
    nobody = ApprovalDecided(task_id="nobody", approval_id=ap, decision=Decision.APPROVE, by="a")
    with pytest.raises(DecisionBeforeRequestError):  # it may be about to be accepted
        await desk.pauses.decided(nobody, received_at=desk.clock.now())
    old = desk.clock.now() - timedelta(seconds=EARLY_WAIT_S + 1)
    await desk.pauses.decided(nobody, received_at=old)
    assert desk.refusals() == [
        (gone.event_id, RefusalCode.UNKNOWN),
        (nobody.event_id, RefusalCode.UNKNOWN),
    ]


async def test_a_decision_between_the_record_and_the_pause_resumes_the_run(desk: Desk) -> None:
    """Decided after the record was written, before the pause was marked: the run resumes.

    The request's handler, going on, changes nothing more.
    """
    req = desk.request()
    await desk.store.update_approval(TASK, req.approval_id, lambda _: ApprovalRecord(request=req))
    await desk.decide(req.approval_id)
    [resume] = desk.resumes()
    await desk.ask(req)
    assert desk.resumes() == [resume]
    assert (await desk.record(req.approval_id)).status is ApprovalStatus.RESOLVED


# -- timeouts ------------------------------------------------------------------------------


async def test_a_pending_approval_times_out_as_a_reject_by_hivebus(desk: Desk) -> None:
    """The expiry resolves it `reject` by hivebus, timed out, and the run resumes with that."""
    req = desk.request()
    await desk.ask(req)
    await desk.expire(req)
    [resolved] = desk.sink.of(ApprovalResolved)
    assert (resolved.decision, resolved.by, resolved.reason, resolved.timed_out) == (
        Decision.REJECT,
        "hivebus",
        "approval timed out",
        True,
    )
    assert resolved.decision_event_id is None
    [resume] = desk.resumes()
    assert resume.resume == [resolved]
    late = await desk.decide(req.approval_id)
    assert desk.refusals() == [(late.event_id, RefusalCode.ALREADY_DECIDED)]


async def test_an_expiry_after_the_decision_changes_nothing(desk: Desk) -> None:
    """Decided in time: the expiry that comes due later writes and publishes nothing."""
    req = desk.request()
    await desk.ask(req)
    await desk.decide(req.approval_id)
    writes, sent = desk.store.writes, len(desk.sink.sent)
    await desk.expire(req)
    assert (desk.store.writes, len(desk.sink.sent)) == (writes, sent)
    assert (await desk.record(req.approval_id)).resolution.by == "alice"  # type: ignore[union-attr]


async def test_an_expiry_before_its_time_is_retried(desk: Desk) -> None:
    """An expiry delivered before `expires_at` by this clock is retried, resolving nothing."""
    req = desk.request()
    await desk.ask(req)
    expiry = ApprovalExpired(
        task_id=TASK, approval_id=req.approval_id, subtask_id="send", expires_at=req.expires_at
    )
    with pytest.raises(ExpiryNotDueError) as raised:
        await desk.pauses.expired(expiry)
    assert settlement_for(raised.value) is Settlement.NAK
    assert (await desk.record(req.approval_id)).status is ApprovalStatus.PENDING


async def test_a_redelivered_expiry_finishes_what_a_crash_left(desk: Desk) -> None:
    """Timed out, then the resume's publish failed: the redelivered expiry dispatches it."""
    req = desk.request()
    await desk.ask(req)
    desk.sink.fail_next.add(SubTaskAssigned)
    await redeliver(lambda: desk.expire(req))
    [resume] = desk.resumes()
    assert resume.resume[0].timed_out
    assert len(desk.sink.delivered(ApprovalResolved)) == 1


async def test_a_request_already_expired_times_out_at_once(desk: Desk) -> None:
    """A request handled after its `expires_at` resolves as a timeout without a schedule."""
    req = desk.request(expires_at=START - timedelta(seconds=1))
    await desk.ask(req)
    assert desk.sink.of(ApprovalExpired) == []
    [resume] = desk.resumes()
    assert resume.resume[0].timed_out


# -- several approvals of one pause --------------------------------------------------------


@pytest.mark.parametrize("order", [(0, 1), (1, 0)], ids=["in-order", "reversed"])
async def test_two_approvals_of_one_pause_resume_only_when_both_are_resolved(
    desk: Desk, order: tuple[int, int]
) -> None:
    """One resolution of two dispatches nothing; the second resumes with both, in call order."""
    ids = [approval_id(TASK, "send", 1, 1, call) for call in ("call-1", "call-2")]
    reqs = [desk.request(call, pause=ids) for call in ("call-1", "call-2")]
    await desk.ask(*reqs)
    first, second = (reqs[i] for i in order)
    await desk.decide(first.approval_id, reason="one")
    assert desk.resumes() == []
    assert (await desk.state()).status == S.AWAITING_APPROVAL
    await desk.decide(second.approval_id, Decision.REJECT, reason="two")
    [resume] = desk.resumes()
    assert [r.approval_id for r in resume.resume] == ids
    assert {r.approval_id: r.decision for r in resume.resume} == {
        first.approval_id: Decision.APPROVE,
        second.approval_id: Decision.REJECT,
    }
    dispatch_ids = desk.sink.ids(SubTaskAssigned)
    assert len(set(dispatch_ids)) == 2, dispatch_ids
    assert len(desk.sink.of(ApprovalExpired)) == 2


async def test_a_decision_and_a_timeout_of_one_pause_resume_together(desk: Desk) -> None:
    """One approval decided, the other timed out: the resume carries both."""
    ids = [approval_id(TASK, "send", 1, 1, call) for call in ("call-1", "call-2")]
    one, two = (desk.request(call, pause=ids) for call in ("call-1", "call-2"))
    await desk.ask(one, two)
    await desk.decide(two.approval_id)
    await desk.expire(one)
    [resume] = desk.resumes()
    assert [(r.approval_id, r.timed_out) for r in resume.resume] == [
        (ids[0], True),
        (ids[1], False),
    ]


async def test_a_second_pause_resumes_under_its_own_message_id(desk: Desk) -> None:
    """After a resume the run pauses again: it waits anew and resumes with that pause alone."""
    first = desk.request("call-1")
    await desk.ask(first)
    await desk.decide(first.approval_id)
    await desk.start()
    second = desk.request("call-2")
    await desk.ask(second)
    state = await desk.state()
    assert (state.status, state.pending_approvals, state.resume) == (
        S.AWAITING_APPROVAL,
        [second.approval_id],
        [],
    )
    await desk.decide(second.approval_id, Decision.REJECT)
    resumes = desk.resumes()
    assert [[r.approval_id for r in a.resume] for a in resumes] == [
        [first.approval_id],
        [second.approval_id],
    ]
    assert len(set(desk.sink.ids(SubTaskAssigned))) == 3
    assert [a.decision for a in (await desk.state()).approvals] == [
        Decision.APPROVE,
        Decision.REJECT,
    ]


# -- cancel and deadline -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ending", "status"), [(TaskStatus.CANCELLED, S.CANCELLED), (TaskStatus.TIMEOUT, S.TIMEOUT)]
)
async def test_cancel_or_deadline_ends_a_waiting_subtask_and_closes_its_approvals(
    desk: Desk, ending: TaskStatus, status: SubTaskStatus
) -> None:
    """The task ends; the waiting sub-task ends where it waits; later decisions are refused."""
    ids = [approval_id(TASK, "send", 1, 1, call) for call in ("call-1", "call-2")]
    one, two = (desk.request(call, pause=ids) for call in ("call-1", "call-2"))
    await desk.ask(one, two)
    await desk.decide(one.approval_id)
    await desk.scheduler.stop(TASK, ending, "stop it")
    assert (await desk.state()).status == status
    assert (await desk.record(one.approval_id)).status is ApprovalStatus.RESOLVED
    closed = await desk.record(two.approval_id)
    assert closed.status is ApprovalStatus.CLOSED
    assert "stop it" in closed.closed_reason
    [result] = desk.sink.of(TaskFinished)
    assert result.status == ending
    assert [a.approval_id for a in result.subtasks[0].approvals] == [one.approval_id]
    after = await desk.decide(two.approval_id)
    assert desk.refusals() == [(after.event_id, RefusalCode.TASK_ENDED)]
    sent = len(desk.sink.sent)
    await desk.expire(two)
    assert len(desk.sink.sent) == sent
    assert desk.resumes() == []


async def test_a_request_after_the_cancel_ends_the_subtask(desk: Desk) -> None:
    """Cancelled while running, the run paused anyway: the pause ends it, and the task."""
    await desk.scheduler.stop(TASK, TaskStatus.CANCELLED, "stop it")
    assert (await desk.state()).status == S.RUNNING  # a running run stops at its next step
    req = desk.request()
    await desk.ask(req)
    assert (await desk.state()).status == S.CANCELLED
    assert (await desk.record(req.approval_id)).status is ApprovalStatus.CLOSED
    assert desk.sink.of(ApprovalExpired) == []
    [result] = desk.sink.of(TaskFinished)
    assert result.status == TaskStatus.CANCELLED


async def test_a_pending_approval_of_an_ending_task_takes_no_decision(
    hive_config: HivebusConfig,
) -> None:
    """While a cancel is being applied (the record not closed yet), a decision is `task_ended`."""
    desk = Desk(hive_config)
    await desk.submit("send", "other")
    await desk.start()
    req = desk.request()
    await desk.ask(req)

    def ending(cur: Any) -> Any:
        return cur.model_copy(update={"ending": TaskStatus.CANCELLED, "reason": "stop"})

    await desk.store.update_meta(TASK, ending)
    late = await desk.decide(req.approval_id)
    assert desk.refusals() == [(late.event_id, RefusalCode.TASK_ENDED)]
    assert (await desk.record(req.approval_id)).status is ApprovalStatus.PENDING


# -- the summary ---------------------------------------------------------------------------


async def test_the_result_and_its_note_list_every_approval(desk: Desk) -> None:
    """`TaskFinished` lists the sub-task's approvals; the summary note shows who decided what."""
    req = desk.request()
    await desk.ask(req)
    changed = {**EMAIL, "to": "boss@example.com"}
    await desk.decide(req.approval_id, Decision.MODIFY, arguments=changed, reason="cc | boss")
    await desk.start()
    await desk.finish()
    [result] = desk.sink.of(TaskFinished)
    assert result.status == TaskStatus.COMPLETED
    [approval] = result.subtasks[0].approvals
    assert (approval.approval_id, approval.decision, approval.by, approval.tool) == (
        req.approval_id,
        Decision.MODIFY,
        "alice",
        "send_email",
    )
    assert approval.arguments_diff == {"to": {"from": "a@example.com", "to": "boss@example.com"}}
    [note] = desk.sink.of(NoteWrite)
    assert "## Approvals" in note.body
    [row] = [line for line in note.body.splitlines() if line.startswith("| send | tool_call")]
    assert "modify; changed to: 'a@example.com' -> 'boss@example.com'" in row
    assert "| alice |" in row
    assert "cc / boss" in row


async def test_a_note_without_approvals_has_no_approvals_section(
    hive_config: HivebusConfig,
) -> None:
    """A task nobody was asked about has no approvals section in its note."""
    desk = Desk(hive_config)
    await desk.submit("send")
    await desk.start()
    await desk.finish()
    [note] = desk.sink.of(NoteWrite)
    assert "Approvals" not in note.body


async def test_a_resolved_approval_is_a_span_under_its_subtask(desk: Desk) -> None:
    """With tracing on, a resolution records `approval <id>` under the sub-task's span.

    It runs from the request to the decision and names the decision and who made it.
    """
    exporter = InMemorySpanExporter()
    telemetry.install_for_tests(exporter)
    try:
        req = desk.request()
        await desk.ask(req)
        await desk.decide(req.approval_id, reason="fine")
    finally:
        telemetry.uninstall_for_tests()
    [span] = [s for s in exporter.get_finished_spans() if s.name.startswith("approval ")]
    assert span.name == f"approval {req.approval_id}"
    assert span.parent is not None
    assert span.parent.span_id == telemetry.span_id_for(TASK, "send", "subtask")
    assert span.context.trace_id == telemetry.trace_id_for(TASK)
    assert span.attributes is not None
    assert span.attributes["hivebus.approval.decision"] == "approve"
    assert span.attributes["hivebus.approval.by"] == "alice"
