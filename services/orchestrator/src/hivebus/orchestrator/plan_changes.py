"""The planner's state changes, pure: given the value now (None when absent), the next one.

Like `changes`, each returns None to leave the value as it is and may run several times
(compare-and-set retries a lost race). See `planning` for the flow they serve.
"""

from __future__ import annotations

from datetime import datetime

from hivebus.contracts import (
    SUBTASK_TERMINAL,
    PlanningInfo,
    PlanningState,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskStatus,
    TaskMeta,
    TaskStatus,
    transition,
)
from hivebus.orchestrator.state import MetaChange, PlanningChange

S = SubTaskStatus


def start_planning(task_id: str, now: datetime) -> MetaChange:
    """Create the task's meta, `planning` (it has no sub-tasks yet), unless it exists."""

    def start(cur: TaskMeta | None) -> TaskMeta | None:
        if cur is not None:
            return None
        status = transition(TaskStatus.SUBMITTED, TaskStatus.PLANNING)
        planning = PlanningInfo(source="planned", generation=0)
        return TaskMeta(
            task_id=task_id, status=status, total=0, submitted_at=now, planning=planning
        )

    return start


def _reviews(info: PlanningInfo, review: str | None) -> list[str]:
    return [*info.reviews, review] if review else info.reviews


def plan_accepted(total: int, corrections: int, review: str | None = None) -> MetaChange:
    """`planning -> running` with the first plan's size, once."""

    def accept(cur: TaskMeta | None) -> TaskMeta | None:
        if cur is None or cur.status != TaskStatus.PLANNING:
            return None
        info = cur.planning.model_copy(
            update={
                "generation": 1,
                "corrections": corrections,
                "reviews": _reviews(cur.planning, review),
            }
        )
        status = transition(cur.status, TaskStatus.RUNNING)
        return cur.model_copy(update={"status": status, "total": total, "planning": info})

    return accept


def revision_accepted(
    generation: int, total: int, replaced: list[str], corrections: int, review: str | None
) -> MetaChange:
    """A running task's plan grows to revision `generation`, once (not while it is ending)."""

    def accept(cur: TaskMeta | None) -> TaskMeta | None:
        if (
            cur is None
            or cur.status != TaskStatus.RUNNING
            or cur.ending is not None
            or cur.planning.generation >= generation
        ):
            return None
        info = cur.planning.model_copy(
            update={
                "generation": generation,
                "revisions": cur.planning.revisions + 1,
                "corrections": corrections,
                "superseded": [*cur.planning.superseded, *replaced],
                "reviews": _reviews(cur.planning, review),
            }
        )
        return cur.model_copy(update={"total": total, "planning": info})

    return accept


def dispatched(attempt: int) -> PlanningChange:
    """The attempt is on the bus: `pending -> dispatched` (first write creates the state)."""

    def mark(cur: PlanningState | None) -> PlanningState | None:
        state = cur or PlanningState(attempt=attempt)
        if state.attempt != attempt or state.status != S.PENDING:
            return None if cur is not None else state
        return state.model_copy(update={"status": S.DISPATCHED})

    return mark


def running(event: SubTaskStarted) -> PlanningChange:
    """The attempt's run began (ignored when stale or already further)."""

    def mark(cur: PlanningState | None) -> PlanningState | None:
        if (
            cur is None
            or cur.attempt != event.attempt
            or cur.status not in {S.PENDING, S.DISPATCHED}
        ):
            return None
        return cur.model_copy(update={"status": S.RUNNING, "run_id": event.run_id})

    return mark


def answered(event: SubTaskFinished) -> PlanningChange:
    """The attempt's run ended: its status, answer and usage (summed over attempts), once."""

    def mark(cur: PlanningState | None) -> PlanningState | None:
        if cur is None or cur.attempt != event.attempt or cur.status in SUBTASK_TERMINAL:
            return None
        if event.status == S.AWAITING_APPROVAL:
            return None
        return cur.model_copy(
            update={
                "status": event.status,
                "run_id": event.run_id,
                "reason": event.reason,
                "output": event.output,
                "usage": cur.usage.plus(event.usage),
            }
        )

    return mark


def rejected(attempt: int, errors: list[str]) -> PlanningChange:
    """The attempt's answer is no plan: the next attempt is asked for, with the errors."""

    def mark(cur: PlanningState | None) -> PlanningState | None:
        if cur is None or cur.attempt != attempt or cur.status != S.COMPLETED:
            return None
        return cur.model_copy(
            update={
                "attempt": attempt + 1,
                "status": S.PENDING,
                "rejected": [*cur.rejected, errors],
                "reason": "",
            }
        )

    return mark


def reviewing(attempt: int, approval: str) -> PlanningChange:
    """The attempt's plan waits for a person's decision on `approval`."""

    def mark(cur: PlanningState | None) -> PlanningState | None:
        if cur is None or cur.attempt != attempt or cur.status != S.COMPLETED or cur.review:
            return None
        return cur.model_copy(update={"review": approval})

    return mark


def next_generation(generation: int) -> PlanningChange:
    """Begin plan generation `generation` (a revision) with a fresh attempt, once."""

    def begin(cur: PlanningState | None) -> PlanningState | None:
        if cur is None:
            return PlanningState(generation=generation)
        if cur.generation >= generation:
            return None
        return PlanningState(
            generation=generation,
            attempt=cur.attempt + 1,
            usage=cur.usage,
            corrections=cur.corrections + len(cur.rejected),
        )

    return begin


def given_up(generation: int, reason: str) -> PlanningChange:
    """Revision `generation` will not be made: the task ends as it stood."""

    def mark(cur: PlanningState | None) -> PlanningState | None:
        if cur is None or cur.generation != generation or cur.gave_up:
            return None
        return cur.model_copy(update={"gave_up": True, "reason": reason})

    return mark


def active(meta: TaskMeta, state: PlanningState) -> bool:
    """Whether the task still waits for this generation's plan."""
    if state.generation == 1:
        return meta.status == TaskStatus.PLANNING
    return meta.status == TaskStatus.RUNNING and meta.ending is None
