"""The orchestrator's approval rules and state changes, as pure functions without a store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hivebus.contracts import (
    ApprovalDecided,
    ApprovalKind,
    ApprovalRecord,
    ApprovalRefused,
    ApprovalRequested,
    ApprovalResolved,
    ApprovalStatus,
    Decision,
    RefusalCode,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskState,
    SubTaskStatus,
    TaskStatus,
    Tier,
    Usage,
    approval_id,
)
from hivebus.orchestrator import approvals, awaiting, changes

S = SubTaskStatus
TASK = "t1"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
EXPIRES = NOW + timedelta(hours=1)
EMAIL = {"to": "a@example.com", "subject": "hi"}
EMAIL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "to": {"type": "string"},
        "subject": {"type": "string"},
        "cc": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["to", "subject"],
    "additionalProperties": False,
}


def request(
    call: str = "call-1",
    *,
    pause: list[str] | None = None,
    attempt: int = 1,
    kind: ApprovalKind = ApprovalKind.TOOL_CALL,
    allowed: list[Decision] | None = None,
    **fields: Any,
) -> ApprovalRequested:
    """The request of one `send_email` call (or a question) of sub-task `send`."""
    question = kind is ApprovalKind.QUESTION
    default = [Decision.RESPOND, Decision.REJECT] if question else list(approvals_default())
    return ApprovalRequested(
        task_id=TASK,
        approval_id=approval_id(TASK, "send", attempt, 1, call),
        subtask_id="send",
        attempt=attempt,
        run_id="run-1",
        role="writer",
        step=1,
        call_id=call,
        approval_kind=kind,
        tool="ask_human" if question else "send_email",
        tier=None if question else Tier.WRITE_RISKY,
        arguments={"question": "which?"} if question else EMAIL,
        args_schema=None if question else EMAIL_SCHEMA,
        question="which?" if question else None,
        allowed_decisions=allowed or default,
        expires_at=EXPIRES,
        pause=pause or [],
        **fields,
    )


def approvals_default() -> tuple[Decision, ...]:
    """What a person may decide about a tool call by default."""
    return (Decision.APPROVE, Decision.REJECT, Decision.MODIFY)


def decided(ap: str, decision: Decision = Decision.APPROVE, **fields: Any) -> ApprovalDecided:
    """A person's decision about `ap`."""
    return ApprovalDecided(
        task_id=TASK, approval_id=ap, decision=decision, by=fields.pop("by", "alice"), **fields
    )


def judged(record: ApprovalRecord | None, decision: ApprovalDecided, **how: Any) -> Any:
    """`judge` at `NOW` for a running task, unless told otherwise."""
    return approvals.judge(
        record,
        decision,
        now=how.get("now", NOW),
        task_running=how.get("task_running", True),
        can_wait=how.get("can_wait", False),
    )


def resolved_record(
    req: ApprovalRequested, decision: Decision = Decision.APPROVE
) -> ApprovalRecord:
    """A record resolved by alice's decision."""
    verdict = judged(ApprovalRecord(request=req), decided(req.approval_id, decision))
    assert isinstance(verdict, ApprovalResolved)
    record = approvals.resolve(verdict)(ApprovalRecord(request=req))
    assert record is not None
    return record


def running(**fields: Any) -> SubTaskState:
    """Sub-task `send`, running its first attempt (unless `fields` say otherwise)."""
    return SubTaskState(**{"id": "send", "role": "writer", "status": S.RUNNING, **fields})


# -- the record ----------------------------------------------------------------------------


def test_a_request_creates_its_record_once() -> None:
    """The first request is kept `pending`; asking again keeps the record as it is."""
    first = approvals.request_record(request())(None)
    assert first is not None
    assert first.status is ApprovalStatus.PENDING
    assert approvals.request_record(request())(first) is None


def test_a_request_decided_early_is_created_resolved() -> None:
    """A decision sent before the request makes the record resolved from the start."""
    req = request()
    early = approvals.first_valid(req, [decided(req.approval_id)], NOW)
    assert early is not None
    record = approvals.request_record(req, early)(None)
    assert record is not None
    assert (record.status, record.resolution) == (ApprovalStatus.RESOLVED, early)


def test_the_first_valid_early_decision_is_the_one() -> None:
    """Other approvals' decisions and invalid ones are passed over; the first valid one wins."""
    req = request()
    other = decided(approval_id(TASK, "send", 1, 1, "call-2"))
    invalid = decided(req.approval_id, Decision.MODIFY, arguments={"to": 1})
    bob = decided(req.approval_id, Decision.REJECT, by="bob")
    alice = decided(req.approval_id)
    early = approvals.first_valid(req, [other, invalid, bob, alice], NOW)
    assert early is not None
    assert early.decision_event_id == bob.event_id
    assert approvals.first_valid(req, [other, invalid], NOW) is None
    assert approvals.first_valid(req, [alice], EXPIRES) is None, "expired: none is valid"


def test_a_record_leaves_pending_once() -> None:
    """Resolve and close act on a pending record only: the first one written stays."""
    req = request()
    record = resolved_record(req)
    assert approvals.resolve(approvals.timed_out(req, NOW))(record) is None
    assert approvals.close("cancelled")(record) is None
    closed = approvals.close("cancelled")(ApprovalRecord(request=req))
    assert closed is not None
    assert (closed.status, closed.closed_reason) == (ApprovalStatus.CLOSED, "cancelled")
    assert approvals.resolve(approvals.timed_out(req, NOW))(closed) is None
    assert approvals.resolve(approvals.timed_out(req, NOW))(None) is None


def test_a_timeout_is_a_reject_by_hivebus() -> None:
    """Nobody deciding in time resolves as `reject` by "hivebus", "approval timed out"."""
    timeout = approvals.timed_out(request(), NOW)
    assert (timeout.decision, timeout.by, timeout.reason) == (
        Decision.REJECT,
        "hivebus",
        "approval timed out",
    )
    assert timeout.timed_out
    assert timeout.decision_event_id is None
    assert (timeout.decided_at, timeout.expires_at) == (NOW, EXPIRES)


# -- the rules -----------------------------------------------------------------------------


def test_a_valid_decision_becomes_the_resolution_to_write() -> None:
    """Approve on a pending record resolves it, naming the decision it came from."""
    req = request()
    decision = decided(req.approval_id, reason="fine")
    verdict = judged(ApprovalRecord(request=req), decision)
    assert isinstance(verdict, ApprovalResolved)
    assert (verdict.decision, verdict.by, verdict.reason) == (Decision.APPROVE, "alice", "fine")
    assert (verdict.subtask_id, verdict.attempt) == ("send", 1)
    assert verdict.decision_event_id == decision.event_id
    assert (verdict.arguments, verdict.answer, verdict.timed_out) == (None, None, False)


def test_the_winning_decision_again_is_its_stored_resolution() -> None:
    """A redelivery of the decision that won gets the resolution stored, not a refusal."""
    record = resolved_record(request())
    assert record.resolution is not None
    again = decided(record.request.approval_id).model_copy(
        update={"event_id": record.resolution.decision_event_id}
    )
    assert judged(record, again) == record.resolution
    assert judged(record, again, task_running=False) == record.resolution


def test_any_other_decision_after_the_resolution_is_already_decided() -> None:
    """Another decision, whatever it says, is refused `already_decided`, naming the winner."""
    record = resolved_record(request())
    verdict = judged(record, decided(record.request.approval_id, Decision.REJECT, by="bob"))
    assert isinstance(verdict, ApprovalRefused)
    assert verdict.code is RefusalCode.ALREADY_DECIDED
    assert "approve by alice" in verdict.why
    assert verdict.by == "bob"


def test_a_decision_after_a_timeout_is_already_decided() -> None:
    """Once timed out, a decision is refused `already_decided`, saying it timed out."""
    req = request()
    record = approvals.resolve(approvals.timed_out(req, NOW))(ApprovalRecord(request=req))
    verdict = judged(record, decided(req.approval_id))
    assert isinstance(verdict, ApprovalRefused)
    assert verdict.code is RefusalCode.ALREADY_DECIDED
    assert "timed out" in verdict.why


def test_no_record_waits_while_it_may_then_is_unknown() -> None:
    """With no request yet the decision waits (None) while allowed, then is `unknown`."""
    decision = decided(approval_id(TASK, "send", 1, 1, "call-9"))
    assert judged(None, decision, can_wait=True) is None
    for task_running in (True, False):
        verdict = judged(None, decision, task_running=task_running)
        assert isinstance(verdict, ApprovalRefused)
        assert verdict.code is RefusalCode.UNKNOWN
        assert decision.approval_id in verdict.why


def test_a_closed_record_is_task_ended() -> None:
    """An approval closed by a cancel or the deadline refuses `task_ended`, with the reason."""
    req = request()
    closed = approvals.close("the task is ending cancelled: stop")(ApprovalRecord(request=req))
    verdict = judged(closed, decided(req.approval_id))
    assert isinstance(verdict, ApprovalRefused)
    assert verdict.code is RefusalCode.TASK_ENDED
    assert "stop" in verdict.why


def test_a_pending_record_of_an_ending_task_is_task_ended() -> None:
    """While a cancel or the deadline is ending the task, no decision resolves anything."""
    req = request()
    verdict = judged(ApprovalRecord(request=req), decided(req.approval_id), task_running=False)
    assert isinstance(verdict, ApprovalRefused)
    assert verdict.code is RefusalCode.TASK_ENDED


def test_a_decision_at_or_after_expiry_is_expired() -> None:
    """A decision at `expires_at` or later is refused `expired`; the timeout will resolve it."""
    req = request()
    for now in (EXPIRES, EXPIRES + timedelta(seconds=1)):
        verdict = judged(ApprovalRecord(request=req), decided(req.approval_id), now=now)
        assert isinstance(verdict, ApprovalRefused)
        assert verdict.code is RefusalCode.EXPIRED
    just_before = EXPIRES - timedelta(microseconds=1)
    assert isinstance(
        judged(ApprovalRecord(request=req), decided(req.approval_id), now=just_before),
        ApprovalResolved,
    )


NOT_ALLOWED_OR_INVALID: list[tuple[str, ApprovalRequested, dict[str, Any], RefusalCode, str]] = [
    (
        "modify-not-allowed",
        request(allowed=[Decision.APPROVE, Decision.REJECT]),
        {"decision": Decision.MODIFY, "arguments": EMAIL},
        RefusalCode.NOT_ALLOWED,
        "allowed: approve, reject",
    ),
    (
        "respond-to-a-call",
        request(),
        {"decision": Decision.RESPOND, "answer": "yes"},
        RefusalCode.NOT_ALLOWED,
        "respond is not allowed",
    ),
    (
        "modify-without-arguments",
        request(),
        {"decision": Decision.MODIFY},
        RefusalCode.INVALID,
        "modify needs `arguments`",
    ),
    (
        "approve-with-arguments",
        request(),
        {"decision": Decision.APPROVE, "arguments": EMAIL},
        RefusalCode.INVALID,
        "`arguments` go with modify",
    ),
    (
        "modify-of-a-question",
        request(kind=ApprovalKind.QUESTION, allowed=[Decision.MODIFY, Decision.RESPOND]),
        {"decision": Decision.MODIFY, "arguments": {}},
        RefusalCode.INVALID,
        "this is neither",
    ),
    (
        "respond-without-answer",
        request(kind=ApprovalKind.QUESTION),
        {"decision": Decision.RESPOND, "answer": "  "},
        RefusalCode.INVALID,
        "respond needs an `answer`",
    ),
    (
        "respond-with-no-answer-field",
        request(kind=ApprovalKind.QUESTION),
        {"decision": Decision.RESPOND},
        RefusalCode.INVALID,
        "respond needs an `answer`",
    ),
    (
        "reject-with-an-answer",
        request(kind=ApprovalKind.QUESTION),
        {"decision": Decision.REJECT, "answer": "gold"},
        RefusalCode.INVALID,
        "`answer` goes with respond",
    ),
    (
        "respond-to-a-call-allowed-by-mistake",
        request(allowed=[Decision.RESPOND]),
        {"decision": Decision.RESPOND, "answer": "yes"},
        RefusalCode.INVALID,
        "this is no question",
    ),
]


@pytest.mark.parametrize(
    ("req", "decision", "code", "why"),
    [case[1:] for case in NOT_ALLOWED_OR_INVALID],
    ids=[case[0] for case in NOT_ALLOWED_OR_INVALID],
)
def test_a_decision_the_request_cannot_take_is_refused(
    req: ApprovalRequested, decision: dict[str, Any], code: RefusalCode, why: str
) -> None:
    """Each decision outside the request's rules is refused with its code and a reason."""
    verdict = judged(ApprovalRecord(request=req), decided(req.approval_id, **decision))
    assert isinstance(verdict, ApprovalRefused)
    assert verdict.code is code
    assert why in verdict.why


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"to": 42, "subject": "hi"}, "to: 42 is not of type 'string'"),
        ({"to": "a@b.c"}, "'subject' is a required property"),
        ({**EMAIL, "cc": ["x", 7]}, "cc.1: 7 is not of type 'string'"),
        ({**EMAIL, "bcc": "x"}, "Additional properties are not allowed ('bcc'"),
    ],
    ids=["wrong-type", "missing", "nested", "extra"],
)
def test_modify_with_schema_invalid_arguments_names_the_field(
    arguments: dict[str, Any], named: str
) -> None:
    """`modify` arguments failing the tool's schema are `invalid`, the field named in `why`."""
    req = request()
    decision = decided(req.approval_id, Decision.MODIFY, arguments=arguments)
    verdict = judged(ApprovalRecord(request=req), decision)
    assert isinstance(verdict, ApprovalRefused)
    assert verdict.code is RefusalCode.INVALID
    assert named in verdict.why, verdict.why


def test_modify_with_valid_arguments_carries_them() -> None:
    """Valid `modify` arguments are the resolution's arguments."""
    req = request()
    changed = {**EMAIL, "to": "b@example.com"}
    verdict = judged(
        ApprovalRecord(request=req), decided(req.approval_id, Decision.MODIFY, arguments=changed)
    )
    assert isinstance(verdict, ApprovalResolved)
    assert verdict.arguments == changed


def test_respond_with_an_answer_carries_it() -> None:
    """`respond` to a question resolves with the answer, and no arguments."""
    req = request(kind=ApprovalKind.QUESTION)
    decision = decided(req.approval_id, Decision.RESPOND, answer="the gold one")
    verdict = judged(ApprovalRecord(request=req), decision)
    assert isinstance(verdict, ApprovalResolved)
    assert (verdict.decision, verdict.answer, verdict.arguments) == (
        Decision.RESPOND,
        "the gold one",
        None,
    )


def test_an_invalid_tool_schema_refuses_modify_only() -> None:
    """A request whose argument schema is itself invalid cannot be modified, saying why."""
    problem = approvals.arguments_problem({"type": 12}, EMAIL)
    assert problem is not None
    assert "schema is invalid" in problem
    assert approvals.arguments_problem(None, {"anything": 1}) is None


def test_many_schema_errors_are_counted_not_all_listed() -> None:
    """At most `MAX_SCHEMA_ERRORS` are named; the rest are counted."""
    schema = {"type": "object", "additionalProperties": {"type": "string"}}
    problem = approvals.arguments_problem(schema, {f"k{i}": i for i in range(8)})
    assert problem is not None
    assert problem.count("is not of type") == approvals.MAX_SCHEMA_ERRORS
    assert "(and 3 more)" in problem


def test_request_ids_must_be_key_safe() -> None:
    """An approval id (or a pause's) that cannot be a KV key token is not taken."""
    assert approvals.has_safe_ids(request(pause=["ap-0000000000000001"]))
    assert not approvals.has_safe_ids(request().model_copy(update={"approval_id": "a.b"}))
    assert not approvals.has_safe_ids(request(pause=["ap-1 >"]))


# -- the sub-task --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [S.DISPATCHED, S.RUNNING, S.READY])
def test_a_request_pauses_a_dispatched_or_running_subtask(status: SubTaskStatus) -> None:
    """The sub-task waits for its whole pause; an older pause's resume is forgotten."""
    other = approval_id(TASK, "send", 1, 1, "call-2")
    req = request(pause=[approval_id(TASK, "send", 1, 1, "call-1"), other])
    old = approvals.timed_out(request("call-0"), NOW)
    state = awaiting.pause("writer", 0, req)(running(status=status, resume=[old]))
    assert state is not None
    assert state.status == S.AWAITING_APPROVAL
    assert state.pending_approvals == [req.approval_id, other]
    assert state.resume == []


def test_a_request_of_the_current_pause_changes_nothing_or_adds_its_ids() -> None:
    """A repeat of the pause changes nothing; a request naming an id not listed adds it."""
    req = request()
    waiting = awaiting.pause("writer", 0, req)(running())
    assert waiting is not None
    assert awaiting.pause("writer", 0, req)(waiting) is None
    more = request("call-2", pause=[req.approval_id, approval_id(TASK, "send", 1, 1, "call-2")])
    grown = awaiting.pause("writer", 0, more)(waiting)
    assert grown is not None
    assert grown.pending_approvals == [req.approval_id, more.approval_id]


@pytest.mark.parametrize(
    "state",
    [
        running(attempt=2),
        running(status=S.COMPLETED),
        running(status=S.CANCELLED),
        SubTaskState(id="send", role="writer"),  # pending, its dependency not completed
    ],
    ids=["stale-attempt", "completed", "cancelled", "never-dispatchable"],
)
def test_a_request_the_subtask_cannot_wait_for_changes_nothing(state: SubTaskState) -> None:
    """A stale attempt, an ended sub-task, or one never dispatchable is not paused."""
    assert awaiting.pause("writer", 1, request())(state) is None
    assert not awaiting.waits_for(state, request())


def test_a_request_overtaking_the_dispatch_mark_pauses_it() -> None:
    """With its dependencies done, a pending (not yet marked) sub-task pauses all the same."""
    state = awaiting.pause("writer", 0, request())(None)
    assert state is not None
    assert state.status == S.AWAITING_APPROVAL


def test_one_resolution_of_two_keeps_waiting_the_last_makes_it_ready() -> None:
    """The pause is `ready` only with every resolution, carried in the pause's order."""
    first, second = request("call-1"), request("call-2")
    pause = [first.approval_id, second.approval_id]
    first, second = (r.model_copy(update={"pause": pause}) for r in (first, second))
    waiting = awaiting.pause("writer", 0, first)(running())
    one = awaiting.apply_resolution("writer", 0, resolved_record(second, Decision.REJECT))(waiting)
    assert one is not None
    assert one.status == S.AWAITING_APPROVAL
    assert [r.approval_id for r in one.resume] == [second.approval_id]
    both = awaiting.apply_resolution("writer", 0, resolved_record(first))(one)
    assert both is not None
    assert both.status == S.READY
    assert [r.approval_id for r in both.resume] == pause
    assert both.pending_approvals == []
    assert [a.decision for a in both.approvals] == [Decision.REJECT, Decision.APPROVE]
    assert awaiting.apply_resolution("writer", 0, resolved_record(first))(both) is None


def test_a_resolution_overtaking_its_request_marks_the_pause_itself() -> None:
    """A resolution applied before its request marks the whole pause, resuming when complete."""
    ready = awaiting.apply_resolution("writer", 0, resolved_record(request()))(running())
    assert ready is not None
    assert ready.status == S.READY
    other = approval_id(TASK, "send", 1, 1, "call-2")
    two = request(pause=[approval_id(TASK, "send", 1, 1, "call-1"), other])
    waiting = awaiting.apply_resolution("writer", 0, resolved_record(two))(running())
    assert waiting is not None
    assert waiting.status == S.AWAITING_APPROVAL
    assert waiting.pending_approvals == [two.approval_id, other]


def test_a_resolution_for_a_subtask_that_ended_changes_nothing() -> None:
    """Cancelled while waiting: a resolution that comes after is not added."""
    cancelled = running(status=S.CANCELLED, pending_approvals=[request().approval_id])
    assert awaiting.apply_resolution("writer", 0, resolved_record(request()))(cancelled) is None


@pytest.mark.parametrize(
    ("ending", "status"), [(TaskStatus.CANCELLED, S.CANCELLED), (TaskStatus.TIMEOUT, S.TIMEOUT)]
)
def test_stopping_ends_a_waiting_subtask_by_the_ending(
    ending: TaskStatus, status: SubTaskStatus
) -> None:
    """A cancel ends a waiting sub-task `cancelled`, the deadline `timeout`; ids stay listed."""
    waiting = awaiting.pause("writer", 0, request())(running())
    ended = changes.cancel_waiting("send", "writer", "stop", ending)(waiting)
    assert ended is not None
    assert (ended.status, ended.reason) == (status, "stop")
    assert ended.pending_approvals == [request().approval_id]
    not_started = changes.cancel_waiting("send", "writer", "stop", ending)(None)
    assert not_started is not None
    assert not_started.status == S.CANCELLED
    assert changes.cancel_waiting("send", "writer", "stop", ending)(running()) is None


def test_a_resume_is_marked_dispatched_once() -> None:
    """`ready -> dispatched` for the same attempt only; anything further is left."""
    ready = running(status=S.READY)
    marked = changes.mark_resumed(1)(ready)
    assert marked is not None
    assert marked.status == S.DISPATCHED
    assert changes.mark_resumed(1)(marked) is None
    assert changes.mark_resumed(2)(ready) is None
    assert changes.mark_resumed(1)(None) is None


def test_a_start_while_the_resume_waits_to_be_dispatched_is_ignored() -> None:
    """A late start of the paused run cannot take a `ready` sub-task that holds a resume."""
    ready = running(status=S.READY, resume=[approvals.timed_out(request(), NOW)])
    started = SubTaskStarted(
        task_id=TASK, subtask_id="send", attempt=1, run_id="run-1", role="writer", model="m"
    )
    assert changes.mark_running("writer", 0, started)(ready) is None
    after = changes.mark_running("writer", 0, started)(running(status=S.DISPATCHED))
    assert after is not None
    assert after.status == S.RUNNING


def test_a_run_ending_awaiting_approval_is_not_a_result() -> None:
    """A `SubTaskFinished` saying `awaiting_approval` changes nothing: a pause is a request."""
    event = SubTaskFinished(
        task_id=TASK,
        subtask_id="send",
        attempt=1,
        run_id="run-1",
        role="writer",
        status=S.AWAITING_APPROVAL,
        reason="paused",
        usage=Usage(),
    )
    assert changes.apply_result("writer", 0, event)(running()) is None
