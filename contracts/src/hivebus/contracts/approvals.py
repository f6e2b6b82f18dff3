"""Human approvals: a risky step waits for a person, without holding a worker.

    agent:        checkpoint (phase awaiting_approval)  ->  ApprovalRequested  ->  ack
    orchestrator: ApprovalRecord `pending`, the sub-task `awaiting_approval`, the expiry
                  scheduled (ApprovalExpired, a scheduled message on CONTROL)
    a person:     ApprovalDecided on CONTROL (approve | reject | modify | respond)
    orchestrator: the first valid decision wins (compare-and-set on the record)
                  -> ApprovalResolved on EVENTS; anything else -> ApprovalRefused, saying why
                  once every approval of the pause is resolved: the sub-task is dispatched
                  again, its assignment carrying the resolutions (`SubTaskAssigned.resume`)
    agent:        resumes from the checkpoint, re-checks expiry, policy and budget, applies

No decision before `expires_at` resolves as `reject` with reason "approval timed out".

An approval's id is derived from where it was asked (`approval_id`), so asking again after a
crash asks the same question, and a decision names exactly one call.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hivebus.contracts.base import Event
from hivebus.contracts.ids import Identifier, RoleName
from hivebus.contracts.tools import Tier

TIMED_OUT_REASON = "approval timed out"
"""The reason of the `reject` an approval resolves to when nobody decided in time."""

SYSTEM_APPROVER = "hivebus"
"""The `by` of a resolution nobody made (a timeout)."""


class ApprovalKind(StrEnum):
    """What a person is asked to allow or answer."""

    TOOL_CALL = "tool_call"
    """A tool call of a tier the role may use only with approval (or a `needs_approval` tool)."""
    SPEND = "spend"
    """A model call whose estimated cost, or the task budget used so far, passed a threshold."""
    QUESTION = "question"
    """The model asked a person (`ask_human`): the answer becomes the tool's result."""
    PLAN = "plan"
    """A planner's plan (or revision) waits for a person before it runs (`planning.review`):
    `arguments` is the plan; `modify` gives the plan that runs instead, checked again."""


class Decision(StrEnum):
    """What a person decided."""

    APPROVE = "approve"
    REJECT = "reject"
    MODIFY = "modify"
    """Approve with other arguments (a tool call's, validated against the tool's schema; or a
    reviewed plan, checked again like the planner's)."""
    RESPOND = "respond"
    """Answer a question (`ask_human` only)."""


DEFAULT_DECISIONS: tuple[Decision, ...] = (Decision.APPROVE, Decision.REJECT, Decision.MODIFY)
"""What a person may decide about a tool call unless the role says otherwise."""


class RefusalCode(StrEnum):
    """Why a decision changed nothing."""

    UNKNOWN = "unknown"
    """No approval with this id was requested (or not yet, after a bounded wait)."""
    ALREADY_DECIDED = "already_decided"
    EXPIRED = "expired"
    NOT_ALLOWED = "not_allowed"
    """The decision is not one of the request's `allowed_decisions`."""
    INVALID = "invalid"
    """`modify` arguments that fail the tool's schema, or a decision missing what it needs."""
    TASK_ENDED = "task_ended"
    """The task or sub-task ended (cancel, deadline) while the approval waited."""
    POLICY = "policy"
    """At resume, the role's policy no longer allows the call at all."""
    BUDGET = "budget"
    """At resume, the task budget cannot cover going on."""


def approval_id(task_id: str, subtask_id: str, attempt: int, step: int, call_id: str) -> str:
    """The deterministic id of the approval of one call (`ap-` and 16 hex digits)."""
    where = f"{task_id}\x00{subtask_id}\x00{attempt}\x00{step}\x00{call_id}"
    return "ap-" + hashlib.sha256(where.encode()).hexdigest()[:16]


class ApprovalRequested(Event):
    """A run paused: a person must decide before the step goes on (on EVENTS)."""

    kind: Literal["approval_requested"] = "approval_requested"
    approval_id: str = Field(description="Deterministic: task, sub-task, attempt, step, call.")
    subtask_id: Identifier
    attempt: int = Field(ge=1)
    run_id: str
    role: RoleName
    step: int = Field(ge=0, description="The model step whose answer asked for the call.")
    call_id: str = Field(description="The tool call's id (or `spend-<step>` for a model call).")
    approval_kind: ApprovalKind
    tool: str = Field(description="The tool's name, or the model route for `spend`.")
    tier: Tier | None = Field(default=None, description="The tool's tier (tool calls).")
    arguments: dict[str, Any] = Field(default_factory=dict)
    args_schema: dict[str, Any] | None = Field(
        default=None, description="JSON Schema of the tool's arguments: `modify` must pass it."
    )
    reason: str = Field(
        default="", description="Why it is asked: the model's stated reason and the rule."
    )
    question: str | None = Field(default=None, description="What the model asks (`question`).")
    estimated_cost_usd: float | None = Field(default=None, ge=0)
    allowed_decisions: list[Decision] = Field(min_length=1)
    expires_at: datetime = Field(description="No decision by then resolves as `reject`.")
    pause: list[str] = Field(
        default_factory=list,
        description="Every approval id this pause of the run waits for, this one included "
        "(several calls of one turn are asked at once); the run resumes when all are resolved.",
    )


class ApprovalDecided(Event):
    """A person's decision about one approval (on CONTROL; anyone may send one)."""

    kind: Literal["approval_decided"] = "approval_decided"
    approval_id: str = Field(min_length=1, max_length=64)
    decision: Decision
    by: str = Field(min_length=1, max_length=200, description="Who decided.")
    reason: str = Field(default="", max_length=10_000)
    arguments: dict[str, Any] | None = Field(
        default=None, description="`modify`: the arguments the call runs with instead."
    )
    answer: str | None = Field(
        default=None, max_length=100_000, description="`respond`: the answer to the question."
    )


class ApprovalResolved(Event):
    """The decision that counts (the first valid one, or the timeout), on EVENTS."""

    kind: Literal["approval_resolved"] = "approval_resolved"
    approval_id: str
    subtask_id: Identifier
    attempt: int = Field(ge=1)
    decision: Decision
    by: str
    reason: str = ""
    arguments: dict[str, Any] | None = Field(
        default=None, description="`modify`: the new arguments."
    )
    answer: str | None = None
    timed_out: bool = False
    decision_event_id: str | None = Field(
        default=None, description="The `ApprovalDecided` this came from (None for a timeout)."
    )
    decided_at: datetime
    expires_at: datetime


class ApprovalRefused(Event):
    """A decision (or, at resume, an approval) that changed nothing, and why (on EVENTS)."""

    kind: Literal["approval_refused"] = "approval_refused"
    approval_id: str
    decision: Decision | None = None
    by: str = ""
    code: RefusalCode
    why: str = Field(description="What is wrong, in words a person can act on.")
    decision_event_id: str | None = Field(
        default=None, description="The refused `ApprovalDecided` (None: refused at resume)."
    )


class ApprovalExpired(Event):
    """An approval's deadline: published when it is requested, delivered when it is due."""

    kind: Literal["approval_expired"] = "approval_expired"
    approval_id: str
    subtask_id: Identifier
    expires_at: datetime


class ApprovalStatus(StrEnum):
    """Where one approval is."""

    PENDING = "pending"
    RESOLVED = "resolved"
    CLOSED = "closed"
    """The sub-task or task ended while it waited; no decision applies any more."""


class ApprovalRecord(BaseModel):
    """One approval as the orchestrator keeps it (KV `tasks`, `<task>.ap.<approval id>`)."""

    model_config = ConfigDict(extra="forbid")

    request: ApprovalRequested
    status: ApprovalStatus = ApprovalStatus.PENDING
    resolution: ApprovalResolved | None = None
    closed_reason: str = ""


class ApprovalSummary(BaseModel):
    """One approval in a sub-task's summary (`TaskFinished`, the task's summary note)."""

    model_config = ConfigDict(extra="forbid")

    approval_id: str
    approval_kind: ApprovalKind
    tool: str
    decision: Decision
    by: str
    at: datetime
    reason: str = ""
    timed_out: bool = False
    arguments_diff: dict[str, Any] | None = Field(
        default=None,
        description="`modify`: each changed argument as {name: {from: old, to: new}}.",
    )


def arguments_diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Each argument `modify` changed, added or removed: {name: {from, to}}."""
    names = sorted(set(before) | set(after))
    return {
        name: {"from": before.get(name), "to": after.get(name)}
        for name in names
        if before.get(name) != after.get(name)
    }


def summary_of(record: ApprovalRecord) -> ApprovalSummary | None:
    """The summary of a resolved approval; None while it is pending or once closed."""
    resolution = record.resolution
    if resolution is None:
        return None
    diff = None
    if resolution.decision is Decision.MODIFY and resolution.arguments is not None:
        diff = arguments_diff(record.request.arguments, resolution.arguments)
    return ApprovalSummary(
        approval_id=record.request.approval_id,
        approval_kind=record.request.approval_kind,
        tool=record.request.tool,
        decision=resolution.decision,
        by=resolution.by,
        at=resolution.decided_at,
        reason=resolution.reason,
        timed_out=resolution.timed_out,
        arguments_diff=diff,
    )
