"""Human approvals inside a run: the role's policy, the pause that asks, the resume that answers.

    a step needs a person   `pause`: every request of the pause joins the checkpoint's
                            `approvals` (each naming all of them in `pause`), the phase is
                            `awaiting_approval`; the caller saves, then raises the returned
                            `RunPaused`, which carries the requests to the service: it
                            publishes them and acks (no terminal event: the run waits)
    a dispatch resumes it   `attach`: each resolution joins its request; while any approval
                            of the pause has none, the requests still waiting are published
                            again and the delivery is acked
    the step goes on        its approval is `applied`, saved with the step's outcome, so a
                            crash before that save applies it again (same idempotency key)

The approvals of the current pause are those not `applied` yet: every earlier one was acted
on before the run could pause again. An approval's id comes from where it is asked
(`hivebus.contracts.approval_id`), so asking again after a crash asks the same question.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hivebus.contracts import (
    ApprovalKind,
    ApprovalRequested,
    ApprovalResolved,
    Decision,
    SubTaskAssigned,
    Tier,
    approval_id,
)
from hivebus.contracts.approvals import DEFAULT_DECISIONS
from hivebus.contracts.runs import PendingApproval, RunCheckpoint, RunPhase
from hivebus.core import RoleConfig

QUESTION_DECISIONS: tuple[Decision, ...] = (Decision.RESPOND, Decision.REJECT)
"""What a person may do with a question (`ask_human`): answer it, or decline to."""

SPEND_DECISIONS: tuple[Decision, ...] = (Decision.APPROVE, Decision.REJECT)
"""What a person may do with a model call's spend."""

DEFAULT_TIMEOUT_S = 3600.0
"""How long an approval waits unless the role says (`RoleConfig.approval_timeout_s`)."""


@dataclass(frozen=True)
class ApprovalPolicy:
    """The approval settings of one role (its tiers are the toolbox's `TierPolicy`)."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    """How long an approval waits; no decision by then resolves as `reject`."""
    decisions: tuple[Decision, ...] = DEFAULT_DECISIONS
    """What a person may decide about a tool call."""
    approve_cost_usd: float | None = None
    """Ask before a model call whose estimated cost is above this (None: never)."""
    approve_at_budget: float | None = None
    """Ask once per run before a model call when the task used this share of its budget."""

    @classmethod
    def of(cls, role: RoleConfig) -> ApprovalPolicy:
        """The approval settings `role` configures."""
        return cls(
            timeout_s=role.approval_timeout_s,
            decisions=tuple(role.allowed_decisions),
            approve_cost_usd=role.approve_cost_usd,
            approve_at_budget=role.approve_at_budget,
        )

    @property
    def asks_spend(self) -> bool:
        """Whether any model call may need a person's approval."""
        return self.approve_cost_usd is not None or self.approve_at_budget is not None


class RunPaused(Exception):  # noqa: N818 - a signal from the run to the service, not a failure
    """The run waits for people: its checkpoint is saved, `requests` are to be published."""

    def __init__(self, requests: Iterable[ApprovalRequested]) -> None:
        """Carry the requests still waiting for a decision."""
        self.requests = list(requests)
        super().__init__(", ".join(r.approval_id for r in self.requests))


@dataclass(frozen=True)
class Asking:
    """What one request asks about: everything but where in the run it is asked."""

    kind: ApprovalKind
    tool: str
    call_id: str
    decisions: tuple[Decision, ...]
    reason: str
    tier: Tier | None = None
    arguments: dict[str, Any] | None = None
    args_schema: dict[str, Any] | None = None
    question: str | None = None
    estimated_cost_usd: float | None = None


def request(
    assignment: SubTaskAssigned,
    run_id: str,
    step: int,
    asking: Asking,
    expires_at: datetime,
) -> ApprovalRequested:
    """The request for `asking` at model step `step` of the run (its id is deterministic)."""
    ap = approval_id(
        assignment.task_id, assignment.subtask_id, assignment.attempt, step, asking.call_id
    )
    return ApprovalRequested(
        event_id=f"{ap}-requested",  # the same question asked again is the same event
        task_id=assignment.task_id,
        approval_id=ap,
        subtask_id=assignment.subtask_id,
        attempt=assignment.attempt,
        run_id=run_id,
        role=assignment.role,
        step=step,
        call_id=asking.call_id,
        approval_kind=asking.kind,
        tool=asking.tool,
        tier=asking.tier,
        arguments=asking.arguments or {},
        args_schema=asking.args_schema,
        reason=asking.reason,
        question=asking.question,
        estimated_cost_usd=asking.estimated_cost_usd,
        allowed_decisions=list(asking.decisions),
        expires_at=expires_at,
    )


def expiry(now: datetime, policy: ApprovalPolicy) -> datetime:
    """When an approval asked at `now` expires."""
    return now + timedelta(seconds=policy.timeout_s)


def find(state: RunCheckpoint, approval: str) -> PendingApproval | None:
    """The run's approval with this id, if it was asked."""
    return next((p for p in state.approvals if p.request.approval_id == approval), None)


def waiting(state: RunCheckpoint) -> list[PendingApproval]:
    """The approvals of the current pause: asked, not acted on yet."""
    return [p for p in state.approvals if not p.applied]


def unresolved(state: RunCheckpoint) -> list[ApprovalRequested]:
    """The requests of the current pause that no resolution answers yet."""
    return [p.request for p in waiting(state) if p.resolution is None]


def attach(
    state: RunCheckpoint, resolutions: Iterable[ApprovalResolved]
) -> list[ApprovalRequested]:
    """Give each waiting approval its resolution; return the requests still unanswered.

    A resolution for an approval this run did not ask, or already acted on, is ignored (a
    dispatch of an earlier pause, delivered again); a resolution already attached stays.
    """
    for resolution in resolutions:
        pending = find(state, resolution.approval_id)
        if pending is not None and not pending.applied and pending.resolution is None:
            pending.resolution = resolution
    return unresolved(state)


def pause(state: RunCheckpoint, requests: list[ApprovalRequested]) -> RunPaused:
    """Record a pause asking `requests` in `state` (save it next); the signal to raise then.

    Each request names every request of the pause; the signal carries every request of
    the run still waiting for a decision.
    """
    ids = [r.approval_id for r in requests]
    state.approvals.extend(
        PendingApproval(request=r.model_copy(update={"pause": ids})) for r in requests
    )
    state.phase = RunPhase.AWAITING_APPROVAL
    return RunPaused(unresolved(state))
