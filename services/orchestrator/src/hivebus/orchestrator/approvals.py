"""Human approvals in the orchestrator: the decision rules and the record's changes, all pure.

    ApprovalRequested  ->  `request_record` (the record, once; resolved by `first_valid` of
                           the decisions sent before it, if any)
    ApprovalDecided    ->  `judge`:  None                  not requested yet: wait for it
                                     ApprovalRefused       changes nothing, says why
                                     ApprovalResolved      what to compare-and-set (`resolve`)
    ApprovalExpired    ->  `timed_out`: the `reject` nobody decided
    cancel, deadline   ->  `close` what still waits

What the sub-task does meanwhile (`awaiting_approval`, then `ready` to resume) is in
`awaiting`.

Changes follow `changes`: given the value now (None when absent) they return the next one, or
None to leave it, and may run several times (compare-and-set retries a lost race). A record
leaves `pending` once, so of two decisions raced to it exactly one is written; the other is
judged again against what won and refused `already_decided`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import jsonschema

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
    is_identifier,
)
from hivebus.contracts.approvals import SYSTEM_APPROVER, TIMED_OUT_REASON
from hivebus.orchestrator.state import RecordChange

MAX_SCHEMA_ERRORS = 5
"""Schema errors of `modify` arguments named in one refusal."""


# -- the record ----------------------------------------------------------------------------


def request_record(
    request: ApprovalRequested, early: ApprovalResolved | None = None
) -> RecordChange:
    """The record of a request, unless one is stored (asking again asks the same).

    It is `pending`, or already `resolved` by `early`: a decision stored before the request
    was recorded (see `early`).
    """

    def record(cur: ApprovalRecord | None) -> ApprovalRecord | None:
        if cur is not None:
            return None
        if early is None:
            return ApprovalRecord(request=request)
        return ApprovalRecord(request=request, status=ApprovalStatus.RESOLVED, resolution=early)

    return record


def resolve(resolution: ApprovalResolved) -> RecordChange:
    """`pending -> resolved`; a record already resolved or closed keeps what it has."""

    def resolved(cur: ApprovalRecord | None) -> ApprovalRecord | None:
        if cur is None or cur.status is not ApprovalStatus.PENDING:
            return None
        return cur.model_copy(update={"status": ApprovalStatus.RESOLVED, "resolution": resolution})

    return resolved


def close(reason: str) -> RecordChange:
    """`pending -> closed`: the sub-task or the task ended while the approval waited."""

    def closed(cur: ApprovalRecord | None) -> ApprovalRecord | None:
        if cur is None or cur.status is not ApprovalStatus.PENDING:
            return None
        return cur.model_copy(update={"status": ApprovalStatus.CLOSED, "closed_reason": reason})

    return closed


def timed_out(request: ApprovalRequested, now: datetime) -> ApprovalResolved:
    """The resolution of an approval nobody decided before `expires_at`: `reject` by hivebus."""
    return ApprovalResolved(
        task_id=request.task_id,
        approval_id=request.approval_id,
        subtask_id=request.subtask_id,
        attempt=request.attempt,
        decision=Decision.REJECT,
        by=SYSTEM_APPROVER,
        reason=TIMED_OUT_REASON,
        timed_out=True,
        decided_at=now,
        expires_at=request.expires_at,
    )


# -- the rules -----------------------------------------------------------------------------


def has_safe_ids(request: ApprovalRequested) -> bool:
    """Whether the request's approval ids can be KV key tokens (they are `ap-` and hex)."""
    return all(is_identifier(ap) for ap in (request.approval_id, *request.pause))


def arguments_problem(schema: dict[str, Any] | None, arguments: dict[str, Any]) -> str | None:
    """What is wrong with `modify` arguments against the tool's schema, naming each field."""
    if schema is None:
        return None  # the agent validates again at resume, against the tool itself
    try:
        validator_class = jsonschema.validators.validator_for(schema)
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return f"the tool's argument schema is invalid ({exc.message}); approve or reject instead"
    errors = sorted(
        validator_class(schema).iter_errors(arguments), key=lambda e: list(e.absolute_path)
    )
    if not errors:
        return None
    named = [
        f"{'.'.join(str(p) for p in e.absolute_path) or 'arguments'}: {e.message}"
        for e in errors[:MAX_SCHEMA_ERRORS]
    ]
    more = len(errors) - len(named)
    return (
        "the arguments do not match the tool's schema: "
        + "; ".join(named)
        + (f" (and {more} more)" if more > 0 else "")
    )


Problem = tuple[RefusalCode, str]
"""Why a decision cannot resolve a request: the code, and words a person can act on."""


def _modify_problem(request: ApprovalRequested, decided: ApprovalDecided) -> Problem | None:
    if decided.decision is not Decision.MODIFY:
        if decided.arguments is not None:
            return RefusalCode.INVALID, f"`arguments` go with modify, not {decided.decision.value}"
        return None
    if request.approval_kind not in {ApprovalKind.TOOL_CALL, ApprovalKind.PLAN}:
        why = "modify changes a tool call's arguments or a plan; this is neither"
        return RefusalCode.INVALID, why
    if decided.arguments is None:
        if request.approval_kind is ApprovalKind.PLAN:
            return RefusalCode.INVALID, "modify needs `arguments`: the plan that runs instead"
        return RefusalCode.INVALID, "modify needs `arguments`: the ones the call runs with"
    problem = arguments_problem(request.args_schema, decided.arguments)
    return None if problem is None else (RefusalCode.INVALID, problem)


def _respond_problem(request: ApprovalRequested, decided: ApprovalDecided) -> Problem | None:
    if decided.decision is not Decision.RESPOND:
        if decided.answer is not None:
            return RefusalCode.INVALID, f"`answer` goes with respond, not {decided.decision.value}"
        return None
    if request.approval_kind is not ApprovalKind.QUESTION:
        return RefusalCode.INVALID, "respond answers a question; this is no question"
    if not (decided.answer or "").strip():
        return RefusalCode.INVALID, "respond needs an `answer`: the text the model gets"
    return None


def problem_of(request: ApprovalRequested, decided: ApprovalDecided) -> Problem | None:
    """Why a decision cannot resolve a pending request, or None when it can."""
    if decided.decision not in request.allowed_decisions:
        allowed = ", ".join(d.value for d in request.allowed_decisions)
        why = f"{decided.decision.value} is not allowed here; allowed: {allowed}"
        return RefusalCode.NOT_ALLOWED, why
    return _modify_problem(request, decided) or _respond_problem(request, decided)


def refusal(decided: ApprovalDecided, code: RefusalCode, why: str) -> ApprovalRefused:
    """The `ApprovalRefused` answering one decision."""
    return ApprovalRefused(
        task_id=decided.task_id,
        approval_id=decided.approval_id,
        decision=decided.decision,
        by=decided.by,
        code=code,
        why=why,
        decision_event_id=decided.event_id,
    )


def _resolution(
    request: ApprovalRequested, decided: ApprovalDecided, now: datetime
) -> ApprovalResolved:
    return ApprovalResolved(
        task_id=request.task_id,
        approval_id=request.approval_id,
        subtask_id=request.subtask_id,
        attempt=request.attempt,
        decision=decided.decision,
        by=decided.by,
        reason=decided.reason,
        arguments=decided.arguments if decided.decision is Decision.MODIFY else None,
        answer=decided.answer if decided.decision is Decision.RESPOND else None,
        decision_event_id=decided.event_id,
        decided_at=now,
        expires_at=request.expires_at,
    )


def _settled(resolution: ApprovalResolved) -> str:
    if resolution.timed_out:
        return f"it timed out at {resolution.decided_at.isoformat()} and was rejected"
    return f"already resolved: {resolution.decision.value} by {resolution.by}"


def judge(  # noqa: PLR0911 - one return per rule, in the order they apply
    record: ApprovalRecord | None,
    decided: ApprovalDecided,
    *,
    now: datetime,
    task_running: bool,
    can_wait: bool,
) -> ApprovalResolved | ApprovalRefused | None:
    """What a decision stands for: the resolution to write, a refusal, or None (wait).

    `task_running`: the task runs and no cancel or deadline is ending it. `can_wait`: with no
    record yet, the decision is young enough to wait for its request (see `Pauses.decided`).
    A repeat of the decision that won returns the stored resolution, so it finishes what the
    first delivery began.
    """
    if record is None:
        if can_wait:
            return None
        why = f"no approval {decided.approval_id!r} was requested in task {decided.task_id!r}"
        return refusal(decided, RefusalCode.UNKNOWN, why if task_running else why + " (ended)")
    if record.status is ApprovalStatus.CLOSED:
        return refusal(decided, RefusalCode.TASK_ENDED, f"it was closed: {record.closed_reason}")
    if record.resolution is not None:
        if record.resolution.decision_event_id == decided.event_id:
            return record.resolution
        return refusal(decided, RefusalCode.ALREADY_DECIDED, _settled(record.resolution))
    if not task_running:
        why = "the task is ending (cancelled or at its deadline): no decision applies"
        return refusal(decided, RefusalCode.TASK_ENDED, why)
    request = record.request
    if now >= request.expires_at:
        why = f"it expired at {request.expires_at.isoformat()}; it resolves as reject"
        return refusal(decided, RefusalCode.EXPIRED, why)
    problem = problem_of(request, decided)
    if problem is not None:
        return refusal(decided, *problem)
    return _resolution(request, decided, now)


def first_valid(
    request: ApprovalRequested, decisions: list[ApprovalDecided], now: datetime
) -> ApprovalResolved | None:
    """The resolution of the first of `decisions` (oldest first) that may resolve `request`."""
    pending = ApprovalRecord(request=request)
    for decided in decisions:
        if decided.approval_id != request.approval_id:
            continue
        verdict = judge(pending, decided, now=now, task_running=True, can_wait=False)
        if isinstance(verdict, ApprovalResolved):
            return verdict
    return None
