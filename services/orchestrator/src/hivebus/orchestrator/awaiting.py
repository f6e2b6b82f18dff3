"""A paused sub-task's state: `awaiting_approval` for every approval of its pause, then `ready`.

    ApprovalRequested  ->  `pause`: the sub-task waits for the request's whole `pause`
    resolved           ->  `apply_resolution`: once every approval of the pause is resolved,
                           the sub-task is `ready`, its `resume` holding the resolutions in
                           the pause's order, to be dispatched again (`Scheduler.resume`)

Changes in the manner of `changes`: pure, repeatable, None when there is nothing to do.
"""

from __future__ import annotations

from typing import Any

from hivebus.contracts import (
    SUBTASK_TERMINAL,
    ApprovalRecord,
    ApprovalRequested,
    SubTaskState,
    SubTaskStatus,
    transition,
)
from hivebus.contracts.approvals import summary_of
from hivebus.orchestrator.changes import SubTaskChange, advance, pending

S = SubTaskStatus


def pause_of(request: ApprovalRequested) -> list[str]:
    """Every approval id the request's pause waits for, this one included, in order."""
    return list(dict.fromkeys([*request.pause, request.approval_id]))


def _resolved_in(state: SubTaskState, approval: str) -> bool:
    return any(r.approval_id == approval for r in state.resume) or any(
        a.approval_id == approval for a in state.approvals
    )


def waits_for(state: SubTaskState | None, request: ApprovalRequested) -> bool:
    """Whether the sub-task is paused on this request's attempt, waiting for this approval."""
    return (
        state is not None
        and state.status == S.AWAITING_APPROVAL
        and state.attempt == request.attempt
        and request.approval_id in state.pending_approvals
    )


def pause(role: str, needed: int, request: ApprovalRequested) -> SubTaskChange:
    """The sub-task's run paused for the request's approvals: `-> awaiting_approval`.

    A new pause (the sub-task was dispatched or running) waits for the request's whole `pause`
    and forgets the last one's `resume`; another request of the current pause changes nothing
    (or adds the ids it names). A stale attempt, an ended sub-task, an approval already
    resolved here, or a sub-task that was never dispatchable change nothing.
    """
    ids = pause_of(request)

    def paused(cur: SubTaskState | None) -> SubTaskState | None:
        state = cur or pending(request.subtask_id, role)
        if state.attempt != request.attempt or state.status in SUBTASK_TERMINAL:
            return None
        if _resolved_in(state, request.approval_id):
            return None
        if state.status == S.AWAITING_APPROVAL:
            missing = [ap for ap in ids if ap not in state.pending_approvals]
            if not missing:
                return None
            return state.model_copy(update={"pending_approvals": state.pending_approvals + missing})
        if state.status == S.PENDING and state.deps_done < needed:
            return None
        return state.model_copy(
            update={
                "status": advance(state.status, S.AWAITING_APPROVAL),
                "pending_approvals": ids,
                "resume": [],
            }
        )

    return paused


def apply_resolution(role: str, needed: int, record: ApprovalRecord) -> SubTaskChange:
    """Add a resolved approval to its paused sub-task; the last of its pause makes it `ready`.

    The pause is marked first if its request was not applied yet (a decision may overtake
    it). `ready` carries the resolutions in the pause's order, ready to be dispatched, and
    waits for nothing more. A resolution already added changes nothing.
    """
    resolution = record.resolution
    summary = summary_of(record)
    paused = pause(role, needed, record.request)

    def apply(cur: SubTaskState | None) -> SubTaskState | None:
        marked = paused(cur)
        state = marked or cur
        if resolution is None or summary is None or state is None:
            return None
        if not waits_for(state, record.request) or _resolved_in(state, resolution.approval_id):
            return marked
        resume = [*state.resume, resolution]
        update: dict[str, Any] = {"resume": resume, "approvals": [*state.approvals, summary]}
        if {r.approval_id for r in resume} >= set(state.pending_approvals):
            order = {ap: i for i, ap in enumerate(state.pending_approvals)}
            update["resume"] = sorted(resume, key=lambda r: order[r.approval_id])
            update["pending_approvals"] = []
            update["status"] = transition(state.status, S.READY)
        return state.model_copy(update=update)

    return apply
