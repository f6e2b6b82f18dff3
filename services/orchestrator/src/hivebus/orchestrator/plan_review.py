"""A person reviews each plan before it runs (`planning.review`), as an approval.

    a valid plan (or revision) -> `review_request`: an `ApprovalRequested` of kind `plan`,
                                  whose `arguments` are the plan, recorded by the orchestrator
                                  itself (no run pauses: the planner's run is over)
    approve                    -> the plan runs as it is
    modify                     -> the decision's `arguments` are the plan that runs; checked
                                  like the planner's answer first, refused `invalid` with
                                  every error when it fails (the approval still waits)
    reject, or nobody in time  -> the task fails (a first plan) or ends as it stood (a revision)

Decisions, refusals, expiry and the first-wins rule are the approvals mechanism's own.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hivebus.contracts import (
    PLANNING_SUBTASK,
    ApprovalKind,
    ApprovalRequested,
    ApprovalResolved,
    Decision,
    Plan,
    PlanningState,
)
from hivebus.contracts.approvals import approval_id
from hivebus.orchestrator.plan_checks import PLAN_SCHEMA

DECISIONS = [Decision.APPROVE, Decision.REJECT, Decision.MODIFY]


def review_request(
    task_id: str,
    state: PlanningState,
    part: Plan,
    *,
    role: str,
    now: datetime,
    timeout_s: float,
    replaced: list[str],
) -> ApprovalRequested:
    """The approval a person decides plan generation `state.generation` by."""
    generation = state.generation
    call = f"plan-{generation}"
    ap = approval_id(task_id, PLANNING_SUBTASK, state.attempt, 0, call)
    reason = "planning.review is on: a person approves, edits or rejects each plan before it runs"
    if generation > 1:
        reason += (
            f"; this is revision {generation - 1}, after {', '.join(replaced)} did not "
            "complete: its sub-tasks are added to the plan"
        )
    return ApprovalRequested(
        task_id=task_id,
        approval_id=ap,
        subtask_id=PLANNING_SUBTASK,
        attempt=state.attempt,
        run_id=state.run_id or "-",
        role=role,
        step=0,
        call_id=call,
        approval_kind=ApprovalKind.PLAN,
        tool="plan",
        arguments=part.model_dump(mode="json", exclude_defaults=True),
        args_schema=PLAN_SCHEMA,
        reason=reason,
        allowed_decisions=DECISIONS,
        expires_at=now + timedelta(seconds=timeout_s),
        pause=[ap],
    )


def review_words(generation: int, resolution: ApprovalResolved) -> str:
    """One line for `PlanningInfo.reviews`: which plan, what was decided, by whom."""
    words = f"generation {generation}: {resolution.decision.value} by {resolution.by}"
    return words + (" (timed out)" if resolution.timed_out else "")


def rejection(resolution: ApprovalResolved) -> str:
    """Why the plan does not run, in the task's reason."""
    if resolution.timed_out:
        return f"nobody reviewed the plan by {resolution.expires_at.isoformat()}: rejected"
    why = f": {resolution.reason}" if resolution.reason else ""
    return f"the plan was rejected by {resolution.by}{why}"
