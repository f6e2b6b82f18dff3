"""What a resolution does to the step it answers, after the re-checks made at resume.

re-checks, in order (each refusal is published as `ApprovalRefused`, `decision_event_id` None):
    decided after the approval expired            -> expired: the call is not run (rejected)
    the role's policy now denies the tool         -> policy: the call is not run (denied)
      (or the tool is gone)
    a decision the request did not allow, or      -> not_allowed / invalid: not run (rejected)
      missing what it needs
    (the task budget is re-checked once, for the whole pause, by the loop: `SpendGate`)
then the decision:
    approve   the call runs with its arguments and its idempotency key
    modify    the call runs with the person's arguments (the toolbox validates them: invalid
              ones are the model's `invalid_arguments` result), the same idempotency key
    reject    the model gets a `rejected` result with the person's reason (or the timeout)
    respond   the model gets the person's answer as the result of its question

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from hivebus.agent.tiers import TierDecision, TierPolicy
from hivebus.contracts import (
    ApprovalKind,
    ApprovalRefused,
    ApprovalRequested,
    ApprovalResolved,
    Decision,
    RefusalCode,
    Tier,
    ToolErrorKind,
    ToolResult,
)
from hivebus.contracts.runs import PendingApproval


@dataclass(frozen=True)
class Refusal:
    """Why an approval changes nothing at resume."""

    code: RefusalCode
    why: str


def recheck(
    request: ApprovalRequested, resolution: ApprovalResolved, decision: TierDecision | None
) -> Refusal | None:
    """The refusal of a resolution at resume, or None when it applies.

    `decision` is what the role's policy says about the tool now (None: no such tool); it is
    not asked for spend approvals.
    """
    if not resolution.timed_out and resolution.decided_at > request.expires_at:
        return Refusal(
            RefusalCode.EXPIRED,
            f"decided at {resolution.decided_at.isoformat()}, after the approval expired at "
            f"{request.expires_at.isoformat()}: the call is not run",
        )
    if request.approval_kind is not ApprovalKind.SPEND and decision in {None, TierDecision.DENY}:
        why = "the tool is no longer configured" if decision is None else "its tier is denied"
        return Refusal(
            RefusalCode.POLICY,
            f"the role's policy no longer allows {request.tool!r} ({why}): the call is not run",
        )
    if resolution.decision not in request.allowed_decisions:
        allowed = ", ".join(d.value for d in request.allowed_decisions)
        return Refusal(
            RefusalCode.NOT_ALLOWED,
            f"{resolution.decision.value!r} is not one of the decisions allowed ({allowed})",
        )
    if resolution.decision is Decision.MODIFY and resolution.arguments is None:
        return Refusal(RefusalCode.INVALID, "`modify` came without arguments: the call is not run")
    if resolution.decision is Decision.RESPOND and resolution.answer is None:
        return Refusal(RefusalCode.INVALID, "`respond` came without an answer")
    return None


def refused(pending: PendingApproval, refusal: Refusal) -> ApprovalRefused:
    """The `ApprovalRefused` of an approval refused at resume (one per approval and reason)."""
    request, resolution = pending.request, pending.resolution
    return ApprovalRefused(
        event_id=f"{request.approval_id}-resume-{refusal.code.value}",
        task_id=request.task_id,
        approval_id=request.approval_id,
        decision=resolution.decision if resolution is not None else None,
        by=resolution.by if resolution is not None else "",
        code=refusal.code,
        why=refusal.why,
        decision_event_id=None,
    )


def refusal_result(request: ApprovalRequested, refusal: Refusal) -> ToolResult:
    """What the model reads for a call refused at resume."""
    if refusal.code is RefusalCode.POLICY:
        if request.tier is not None:
            return TierPolicy.denied(request.tool, Tier(request.tier))
        return ToolResult.failure(
            ToolErrorKind.DENIED,
            f"tool {request.tool!r} is no longer available to this role",
            "finish without this action, or say in your answer that it needs a person",
        )
    return ToolResult.failure(
        ToolErrorKind.REJECTED,
        f"the call to {request.tool!r} was not run: {refusal.why}",
        "do not call it again the same way; continue without it or give your final answer",
    )


def rejected(request: ApprovalRequested, resolution: ApprovalResolved) -> ToolResult:
    """What the model reads when a person declined the call (or nobody decided in time)."""
    if resolution.timed_out:
        what = f"nobody decided about the call to {request.tool!r} in time ({resolution.reason})"
    elif request.approval_kind is ApprovalKind.QUESTION:
        what = f"{resolution.by} declined to answer"
    else:
        what = f"{resolution.by} declined the call to {request.tool!r}"
    if resolution.reason and not resolution.timed_out:
        what += f": {resolution.reason}"
    return ToolResult.failure(
        ToolErrorKind.REJECTED,
        what,
        "do not repeat the call; continue without it, or give your final answer and say "
        "what was declined",
    )


def answered(resolution: ApprovalResolved) -> ToolResult:
    """The result of a question a person answered."""
    return ToolResult.success({"answer": resolution.answer, "by": resolution.by})
