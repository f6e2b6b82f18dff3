"""Planning a task from its goal: one more bounded sub-task, for the `planner` role.

    goal-only submission -> meta `planning`, deadline scheduled, planner attempt 1 dispatched
    planner completed    -> its answer checked as a plan (`plan_checks`):
                              valid    -> stored (`<task>.planned`), `PlanReady`, meta
                                          `running`, the plan's roots dispatched
                              invalid  -> attempt n+1, sent the answer and every error, at
                                          most `planning.retries` times; then `failed`
    planner not completed -> the task ends `failed` (nothing was dispatched)
    cancel / deadline    -> the planner's run is told to stop; the task ends at once

The planner is an ordinary agent run (limits, the task budget, retries, breakers, checkpoints,
traces), so a planner whose worker dies resumes like any run. Every step is idempotent: each
attempt's dispatch carries its own message id, and a redelivered result finds the state it
already moved and does what was left (dispatch the next attempt, or the plan's roots).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from hivebus.contracts import (
    PLANNING_SUBTASK,
    SUBTASK_TERMINAL,
    DeadlineReached,
    Plan,
    PlanningInfo,
    PlanningState,
    PlanReady,
    PlanRejected,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskStatus,
    TaskFinished,
    TaskMeta,
    TaskStatus,
    TaskSubmitted,
    Usage,
    transition,
)
from hivebus.core import Clock, EventSink, HivebusConfig, get_logger
from hivebus.orchestrator import changes, tracing
from hivebus.orchestrator.plan_checks import check_planned
from hivebus.orchestrator.state import MetaChange, PlanningChange, StateStore
from hivebus.orchestrator.summary import summary_note

log = get_logger(__name__)

S = SubTaskStatus
PLAN_SCHEMA: dict[str, Any] = Plan.model_json_schema()
"""What the planner must answer: the plan's JSON Schema (the agent checks the shape)."""

PROMPT = (
    "Plan how to achieve the task's goal: break it into sub-tasks, each for one of the roles "
    "listed in the input, ordered by `depends_on`. Rules: use only those roles; give every "
    "sub-task a unique id (letters, digits, `_` and `-`) and a prompt that says what to do; "
    "every `depends_on` entry names another sub-task of the plan; no cycles; at most "
    "`max_subtasks` sub-tasks and no dependency chain longer than `max_depth`; the sub-tasks' "
    "token limits (a role's default when a sub-task gives none) must add up to no more than "
    "the budget's max_tokens. Answer with the plan only."
)
CORRECTION = (
    "\n\nYour previous answer (`rejected_answer` in the input) was not a valid plan. Answer "
    "again with a plan that fixes every error listed under `errors`."
)

Run = Callable[[TaskSubmitted], Awaitable[None]]
"""Start a task whose plan is accepted: dispatch its roots (the scheduler's)."""


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


def plan_accepted(total: int, corrections: int) -> MetaChange:
    """`planning -> running` with the plan's size, once."""

    def accept(cur: TaskMeta | None) -> TaskMeta | None:
        if cur is None or cur.status != TaskStatus.PLANNING:
            return None
        info = cur.planning.model_copy(update={"generation": 1, "corrections": corrections})
        status = transition(cur.status, TaskStatus.RUNNING)
        return cur.model_copy(update={"status": status, "total": total, "planning": info})

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


class Planner:
    """Runs the planning of goal-only tasks for the scheduler."""

    def __init__(
        self,
        store: StateStore,
        events: EventSink,
        config: HivebusConfig,
        clock: Clock,
        run: Run,
    ) -> None:
        """Plan with state in `store`, publish through `events`, start plans through `run`."""
        self.store = store
        self.events = events
        self.config = config
        self.clock = clock
        self.run = run

    async def start(self, submission: TaskSubmitted) -> None:
        """A goal-only submission was stored: begin planning (again, after a redelivery)."""
        task_id = submission.task_id
        meta = await self.store.update_meta(task_id, start_planning(task_id, self.clock.now()))
        if meta is None or meta.status != TaskStatus.PLANNING:
            return
        with tracing.under(submission):
            await self.events.publish(
                DeadlineReached(
                    task_id=task_id,
                    deadline=meta.submitted_at + timedelta(seconds=submission.budget.deadline_s),
                )
            )
        state = await self.store.read_planning(task_id)
        await self._dispatch(submission, state or PlanningState())

    async def started(self, event: SubTaskStarted) -> None:
        """The planner's run began."""
        await self.store.update_planning(event.task_id, running(event))

    async def finished(self, submission: TaskSubmitted, event: SubTaskFinished) -> None:
        """The planner's run ended: accept its plan, send it back, or fail the task."""
        task_id = submission.task_id
        state = await self.store.update_planning(task_id, answered(event))
        meta = await self.store.read_meta(task_id)
        if state is None or meta is None:
            return
        if meta.status == TaskStatus.RUNNING and state.status == S.COMPLETED:
            planned = await self.store.load_planned(task_id)
            if planned is not None:
                await self.run(planned)  # accepted before a crash: its roots, again
            return
        if meta.status != TaskStatus.PLANNING:
            return
        if state.status == S.PENDING:  # a correction asked for before a crash
            await self._dispatch(submission, state)
            return
        if state.attempt == event.attempt and state.status in SUBTASK_TERMINAL:
            await self._judge(submission, meta, state)

    async def _judge(self, submission: TaskSubmitted, meta: TaskMeta, state: PlanningState) -> None:
        """An attempt ended: its plan accepted, sent back with its errors, or the task failed."""
        if state.status != S.COMPLETED:
            why = f"planning failed: the planner's run ended {state.status.value}: {state.reason}"
            await self._fail(submission, meta, state, [why])
            return
        planned, errors = check_planned(submission, state.output, self.config)
        if planned is not None and planned.plan is not None:
            await self._accept(planned, state)
            return
        retrying = len(state.rejected) < self.config.planning.retries
        with tracing.under(submission, PLANNING_SUBTASK):
            await self.events.publish(
                PlanRejected(
                    task_id=submission.task_id,
                    attempt=state.attempt,
                    errors=errors,
                    retrying=retrying,
                )
            )
        if retrying:
            log.info("plan_rejected", attempt=state.attempt, errors=errors)
            change = rejected(state.attempt, errors)
            after = await self.store.update_planning(submission.task_id, change)
            if after is not None and after.status == S.PENDING:
                await self._dispatch(submission, after)
        else:
            await self._fail(submission, meta, state, errors)

    async def stop(self, submission: TaskSubmitted, ending: TaskStatus, reason: str) -> None:
        """A cancel or the deadline while planning: the planner stops, the task ends now."""
        task_id = submission.task_id
        await self.store.mark_cancelled(task_id)  # the planner's run stops at its next step
        meta = await self.store.read_meta(task_id)
        state = await self.store.read_planning(task_id) or PlanningState()
        if meta is not None and meta.status == TaskStatus.PLANNING:
            await self._end(submission, meta, state, ending, f"{reason}; no plan was made yet")

    # -- inside --------------------------------------------------------------------------

    async def _dispatch(self, submission: TaskSubmitted, state: PlanningState) -> None:
        if state.status != S.PENDING:
            return
        role = self.config.planning.role
        correcting = bool(state.rejected)
        with tracing.under(submission, PLANNING_SUBTASK):
            await self.events.publish(
                SubTaskAssigned(
                    task_id=submission.task_id,
                    subtask_id=PLANNING_SUBTASK,
                    attempt=state.attempt,
                    role=role,
                    goal=submission.goal,
                    prompt=PROMPT + (CORRECTION if correcting else ""),
                    input=self._input(submission, state),
                    limits=self.config.roles[role].limits,
                    output_schema=PLAN_SCHEMA,
                    subtask_kind="plan",
                    budget=submission.budget,
                )
            )
        await self.store.update_planning(submission.task_id, dispatched(state.attempt))

    def _input(self, submission: TaskSubmitted, state: PlanningState) -> dict[str, Any]:
        roles = [
            {
                "name": name,
                "description": role.description,
                "tools": [tool.rsplit(":", 1)[-1] for tool in role.tools],
                "limits": role.limits.model_dump(),
            }
            for name, role in sorted(self.config.roles.items())
            if name != self.config.planning.role
        ]
        given: dict[str, Any] = {
            "roles": roles,
            "budget": submission.budget.model_dump(),
            "max_subtasks": self.config.planning.max_subtasks,
            "max_depth": self.config.planning.max_depth,
        }
        if state.rejected:
            given["rejected_answer"] = state.output
            given["errors"] = state.rejected[-1]
        return given

    async def _accept(self, planned: TaskSubmitted, state: PlanningState) -> None:
        assert planned.plan is not None  # noqa: S101 - checked by the caller
        task_id = planned.task_id
        stored = await self.store.create_planned(planned)
        assert stored.plan is not None  # noqa: S101 - only accepted plans are stored
        corrections = len(state.rejected)
        with tracing.under(stored):
            await self.events.publish(
                PlanReady(task_id=task_id, generation=1, plan=stored.plan, corrections=corrections)
            )
        change = plan_accepted(len(stored.plan.subtasks), corrections)
        meta = await self.store.update_meta(task_id, change)
        if meta is not None and meta.status == TaskStatus.RUNNING:
            log.info("plan_ready", subtasks=len(stored.plan.subtasks), corrections=corrections)
            await self.run(stored)

    async def _fail(
        self, submission: TaskSubmitted, meta: TaskMeta, state: PlanningState, errors: list[str]
    ) -> None:
        tries = len(state.rejected) + 1
        reason = f"no valid plan after {tries} planner answer{'s' * (tries > 1)}: " + "; ".join(
            errors
        )
        await self._end(submission, meta, state, TaskStatus.FAILED, reason)

    async def _end(
        self,
        submission: TaskSubmitted,
        meta: TaskMeta,
        state: PlanningState,
        status: TaskStatus,
        reason: str,
    ) -> None:
        """End a task that never ran a plan: its result, its summary note, closed."""
        task_id = submission.task_id
        usage = state.usage.model_copy()
        usage.wall_s = round((self.clock.now() - meta.submitted_at).total_seconds(), 3)
        info = meta.planning.model_copy(update={"corrections": len(state.rejected)})
        result = await self.store.read_result(task_id) or await self.store.create_result(
            TaskFinished(
                task_id=task_id,
                status=status,
                reason=reason,
                degraded=True,
                usage=usage,
                subtasks=[],
                planning=info,
            )
        )
        log.warning("planning_ended", status=result.status.value, reason=result.reason)
        with tracing.under(submission):
            await self.events.publish(result)
            await self.events.publish(summary_note(submission, result))
        await self.store.update_meta(task_id, changes.close_task(result.status, result.reason))


def planner_usage(state: PlanningState | None) -> Usage:
    """What planning used, for the task's total (nothing for a given plan)."""
    return state.usage if state is not None else Usage()
