"""Planning a task: its first plan from a goal, and revised plans after a failure.

    goal-only submission -> meta `planning`, deadline scheduled, planner attempt 1 dispatched
    nothing can move, a sub-task did not complete, `planning.replan` revisions left
                         -> the next plan generation: the planner is asked for the remaining
                            work (`revision`)
    planner completed    -> its answer checked (`plan_checks`, `revision`):
                              valid    -> with `planning.review`, a person decides first
                                          (`plan_review`); then adopted: stored, `PlanReady`,
                                          its sub-tasks dispatched
                              invalid  -> the next attempt, sent the answer and every error,
                                          at most `planning.retries` times per generation
    no plan (the run did not complete, the errors stayed, a person rejected it)
                         -> a first plan: the task ends `failed`, nothing was dispatched;
                            a revision: the task ends as it stood (`gave_up`)
    cancel / deadline    -> the planner's run is told to stop; the task ends at once

The planner is an ordinary agent run (limits, the task budget, retries, breakers, checkpoints,
traces), so a planner whose worker dies resumes like any run. Every step is idempotent: each
attempt's dispatch carries its own message id (attempts count on across generations), and a
redelivered result finds the state it already moved and does what was left. A generation is
adopted once `TaskMeta.planning.generation` reaches it; until then its plan is checked again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Protocol

from hivebus.contracts import (
    PLANNING_SUBTASK,
    SUBTASK_TERMINAL,
    ApprovalExpired,
    ApprovalRecord,
    ApprovalRequested,
    ApprovalResolved,
    ApprovalStatus,
    DeadlineReached,
    Decision,
    Plan,
    PlanningState,
    PlanReady,
    PlanRejected,
    RevisedPlan,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskState,
    SubTaskStatus,
    TaskFinished,
    TaskMeta,
    TaskStatus,
    TaskSubmitted,
    Usage,
)
from hivebus.core import Clock, EventSink, HivebusConfig, get_logger
from hivebus.orchestrator import approvals, changes, plan_review, revision, tracing
from hivebus.orchestrator.graph import Graph
from hivebus.orchestrator.plan_changes import (
    active,
    answered,
    dispatched,
    given_up,
    next_generation,
    plan_accepted,
    rejected,
    reviewing,
    revision_accepted,
    running,
    start_planning,
)
from hivebus.orchestrator.plan_checks import PLAN_SCHEMA, check_planned
from hivebus.orchestrator.state import StateStore
from hivebus.orchestrator.summary import summary_note

log = get_logger(__name__)

S = SubTaskStatus

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


class Host(Protocol):
    """What the planner asks of the scheduler."""

    async def load(
        self, task_id: str, subtask_id: str | None = None, *, fresh: bool = False
    ) -> tuple[TaskSubmitted, Graph] | None:
        """The task's submission with the plan it runs, and its graph."""
        ...

    async def start_plan(self, stored: TaskSubmitted) -> None:
        """Dispatch the roots of an adopted first plan (once each)."""
        ...

    async def start_revision(self, stored: TaskSubmitted, base_size: int) -> None:
        """Dispatch what can start of the sub-tasks a revision added after `base_size`."""
        ...

    async def finish(self, task_id: str) -> None:
        """Finish the task as it stands (a revision was not made)."""
        ...


class Standing:
    """A running task's plan before the revision being made, and how its sub-tasks ended."""

    def __init__(
        self, base: Plan, states: dict[str, SubTaskState], left: int, superseded: list[str]
    ) -> None:
        """Keep the plan so far, every sub-task's state, and the tokens the budget has left."""
        self.base = base
        self.graph = Graph.from_plan(base)
        self.states = states
        self.left = left
        self.superseded = superseded


class Planner:
    """Plans goal-only tasks, and re-plans failed ones, for the scheduler (its `Host`)."""

    def __init__(
        self,
        store: StateStore,
        events: EventSink,
        config: HivebusConfig,
        clock: Clock,
        host: Host,
    ) -> None:
        """Plan with state in `store`, publish through `events`, run plans through `host`."""
        self.store = store
        self.events = events
        self.config = config
        self.clock = clock
        self.host = host

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
        """The planner's run ended: its plan checked, sent back, reviewed, or given up."""
        task_id = submission.task_id
        state = await self.store.update_planning(task_id, answered(event))
        meta = await self.store.read_meta(task_id)
        if state is None or meta is None or state.gave_up:
            return
        if meta.planning.generation >= state.generation:
            if state.status == S.COMPLETED and state.attempt == event.attempt:
                await self._start_again(task_id, state)  # adopted before a crash: the rest
            return
        if not active(meta, state) or state.review is not None:
            return  # ending, or a person decides (`reviewed`)
        if state.status == S.PENDING:  # a correction asked for before a crash
            await self._dispatch(submission, state)
            return
        if state.attempt == event.attempt and state.status in SUBTASK_TERMINAL:
            await self._judge(submission, meta, state)

    async def revise(
        self,
        submission: TaskSubmitted,
        meta: TaskMeta,
        states: list[SubTaskState],
    ) -> bool:
        """Nothing can move: ask for a revised plan if one is due; True while one is made.

        Due when a sub-task that counts did not complete, nothing is ending the task, and
        fewer than `planning.replan` revisions were made. False: finish the task now.
        """
        if meta.ending is not None or meta.planning.revisions >= self.config.planning.replan:
            return False
        if not revision.needs_revision(states, meta.planning.superseded):
            return False
        generation = meta.planning.generation + 1
        state = await self.store.update_planning(submission.task_id, next_generation(generation))
        if state is None or state.generation != generation or state.gave_up:
            return False
        if state.status == S.PENDING:
            log.info("replanning", generation=generation, revisions=meta.planning.revisions)
            await self._dispatch(submission, state)
        return True

    async def reviewed(self, record: ApprovalRecord) -> None:
        """A person decided about a plan (or nobody did in time): adopt it, or give it up."""
        resolution = record.resolution
        task_id = record.request.task_id
        submission, meta, state = await self._planning_of(task_id)
        if (
            resolution is None
            or submission is None
            or meta is None
            or state is None
            or state.review != resolution.approval_id
            or state.gave_up
        ):
            return
        if meta.planning.generation >= state.generation:
            await self._start_again(task_id, state)  # adopted before a crash
            return
        if not active(meta, state):
            return
        if resolution.decision is Decision.REJECT:
            await self._give_up(submission, meta, state, plan_review.rejection(resolution))
            return
        answer = (
            resolution.arguments
            if resolution.decision is Decision.MODIFY
            else record.request.arguments
        )
        part, errors = await self._check(submission, meta, state, answer)
        if part is None:
            why = "the reviewed plan is not valid: " + "; ".join(errors)
            await self._give_up(submission, meta, state, why)
            return
        await self._adopt(submission, state, part, resolution)

    async def edit_problems(
        self, request: ApprovalRequested, arguments: dict[str, Any]
    ) -> list[str]:
        """Why a reviewer's edited plan (`modify`) cannot run: every error, or none."""
        task_id = request.task_id
        submission, meta, state = await self._planning_of(task_id)
        if submission is None or meta is None or state is None:
            return [f"task {task_id!r} is not being planned"]
        _, errors = await self._check(submission, meta, state, arguments)
        return errors

    async def stop(self, submission: TaskSubmitted, ending: TaskStatus, reason: str) -> None:
        """A cancel or the deadline while planning: the planner stops, the task ends now."""
        task_id = submission.task_id
        await self.store.mark_cancelled(task_id)  # the planner's run stops at its next step
        meta = await self.store.read_meta(task_id)
        state = await self.close_review(task_id, f"the task is ending {ending.value}: {reason}")
        if meta is not None and meta.status == TaskStatus.PLANNING:
            await self._end(
                submission,
                meta,
                state or PlanningState(),
                ending,
                f"{reason}; no plan was made yet",
            )

    async def close_review(self, task_id: str, reason: str) -> PlanningState | None:
        """Close the review a plan waits for, if any (the task is ending); the planning state."""
        state = await self.store.read_planning(task_id)
        if state is not None and state.review is not None:
            await self.store.update_approval(task_id, state.review, approvals.close(reason))
        return state

    # -- inside --------------------------------------------------------------------------

    async def _planning_of(
        self, task_id: str
    ) -> tuple[TaskSubmitted | None, TaskMeta | None, PlanningState | None]:
        submission = await self.store.load_plan(task_id)
        meta = await self.store.read_meta(task_id)
        return submission, meta, await self.store.read_planning(task_id)

    async def _standing(self, task_id: str, meta: TaskMeta) -> Standing | None:
        """The plan before the revision being made, read again, with every sub-task's state.

        The plan is the first `meta.total` sub-tasks of the one stored: a crash may have
        stored the revision already, but the meta grows only once it is adopted.
        """
        loaded = await self.host.load(task_id, fresh=True)
        if loaded is None or loaded[0].plan is None:
            return None
        submission = loaded[0]
        assert submission.plan is not None  # noqa: S101 - checked above
        base = Plan(subtasks=submission.plan.subtasks[: meta.total])
        states = {
            spec.id: await self.store.read_subtask(task_id, spec.id)
            or changes.pending(spec.id, spec.role)
            for spec in base.subtasks
        }
        planning = await self.store.read_planning(task_id)
        used = sum(state.usage.tokens for state in states.values())
        used += planning.usage.tokens if planning is not None else 0
        left = revision.tokens_left(submission, used)
        return Standing(base, states, left, meta.planning.superseded)

    async def _check(
        self, submission: TaskSubmitted, meta: TaskMeta, state: PlanningState, answer: Any
    ) -> tuple[Plan | None, list[str]]:
        """An answer as the plan (or revision) being made, or every reason it is not one."""
        if state.generation == 1:
            planned, errors = check_planned(submission, answer, self.config)
            return (planned.plan if planned is not None else None), errors
        standing = await self._standing(submission.task_id, meta)
        if standing is None:
            return None, [f"task {submission.task_id!r} has no plan to revise"]
        return revision.check_revision(
            submission,
            standing.graph,
            standing.states,
            answer,
            left=standing.left,
            config=self.config,
        )

    async def _judge(self, submission: TaskSubmitted, meta: TaskMeta, state: PlanningState) -> None:
        """An attempt ended: its plan proposed, sent back with its errors, or given up."""
        if state.status != S.COMPLETED:
            why = f"planning failed: the planner's run ended {state.status.value}: {state.reason}"
            await self._give_up(submission, meta, state, why)
            return
        part, errors = await self._check(submission, meta, state, state.output)
        if part is not None:
            await self._propose(submission, meta, state, part)
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
            return
        tries = len(state.rejected) + 1
        what = "plan" if state.generation == 1 else "revised plan"
        reason = f"no valid {what} after {tries} planner answer{'s' * (tries > 1)}: " + "; ".join(
            errors
        )
        await self._give_up(submission, meta, state, reason)

    async def _propose(
        self, submission: TaskSubmitted, meta: TaskMeta, state: PlanningState, part: Plan
    ) -> None:
        """A valid plan: adopted now, or first put to a person (`planning.review`)."""
        if not self.config.planning.review:
            await self._adopt(submission, state, part, None)
            return
        task_id = submission.task_id
        replaced: list[str] = []
        if state.generation > 1:
            standing = await self._standing(task_id, meta)
            if standing is not None:
                replaced = revision.replaced_now(
                    standing.graph, standing.states, standing.superseded
                )
        request = plan_review.review_request(
            task_id,
            state,
            part,
            role=self.config.planning.role,
            now=self.clock.now(),
            timeout_s=self.config.planning.review_timeout_s,
            replaced=replaced,
        )
        ap = request.approval_id
        record = await self.store.update_approval(task_id, ap, approvals.request_record(request))
        await self.store.update_planning(task_id, reviewing(state.attempt, ap))
        if record is None:
            return
        if record.status is ApprovalStatus.RESOLVED:
            await self.reviewed(record)  # decided before a crash cut this short
            return
        asked = record.request
        log.info("plan_review_requested", approval_id=ap, generation=state.generation)
        with tracing.under(submission, PLANNING_SUBTASK):
            await self.events.publish(asked)
            await self.events.publish(
                ApprovalExpired(
                    task_id=task_id,
                    approval_id=ap,
                    subtask_id=PLANNING_SUBTASK,
                    expires_at=asked.expires_at,
                )
            )

    async def _adopt(
        self,
        submission: TaskSubmitted,
        state: PlanningState,
        part: Plan,
        review: ApprovalResolved | None,
    ) -> None:
        """Store the plan (or revision), announce it, record it in the meta, and run it."""
        task_id = submission.task_id
        corrections = state.corrections + len(state.rejected)
        words = plan_review.review_words(state.generation, review) if review else None
        by = review.by if review is not None else None
        if state.generation == 1:
            stored = await self.store.create_planned(submission.model_copy(update={"plan": part}))
            assert stored.plan is not None  # noqa: S101 - only accepted plans are stored
            with tracing.under(stored):
                await self.events.publish(
                    PlanReady(
                        task_id=task_id,
                        generation=1,
                        plan=stored.plan,
                        corrections=corrections,
                        reviewed_by=by,
                    )
                )
            change = plan_accepted(len(stored.plan.subtasks), corrections, words)
            meta = await self.store.update_meta(task_id, change)
            if meta is not None and meta.status == TaskStatus.RUNNING:
                log.info("plan_ready", subtasks=len(stored.plan.subtasks), corrections=corrections)
                await self.host.start_plan(stored)
            return
        before = await self.store.read_meta(task_id)
        standing = await self._standing(task_id, before) if before is not None else None
        if before is None or standing is None:
            return
        replaced = revision.replaced_now(standing.graph, standing.states, standing.superseded)
        kept = [
            sid
            for sid in standing.graph.specs
            if sid not in replaced and sid not in set(standing.superseded)
        ]
        composed = revision.compose(submission, standing.base, part)
        revised = await self.store.store_revised(
            RevisedPlan(
                generation=state.generation,
                base_size=len(standing.base.subtasks),
                submission=composed,
            )
        )
        assert revised.submission.plan is not None  # noqa: S101 - composed with a plan
        with tracing.under(submission):
            await self.events.publish(
                PlanReady(
                    task_id=task_id,
                    generation=state.generation,
                    plan=part,
                    corrections=corrections,
                    kept=kept,
                    replaced=replaced,
                    reviewed_by=by,
                )
            )
        total = len(revised.submission.plan.subtasks)
        change = revision_accepted(state.generation, total, replaced, corrections, words)
        meta = await self.store.update_meta(task_id, change)
        if meta is not None and meta.planning.generation == state.generation:
            log.info("plan_revised", generation=state.generation, added=len(part.subtasks))
            await self.host.start_revision(revised.submission, revised.base_size)

    async def _start_again(self, task_id: str, state: PlanningState) -> None:
        """A generation adopted before a crash: dispatch what it has not yet (once each)."""
        if state.generation == 1:
            planned = await self.store.load_planned(task_id)
            if planned is not None:
                await self.host.start_plan(planned)
            return
        revised = await self.store.load_revised(task_id)
        if revised is not None and revised.generation == state.generation:
            await self.host.start_revision(revised.submission, revised.base_size)

    async def _give_up(
        self, submission: TaskSubmitted, meta: TaskMeta, state: PlanningState, reason: str
    ) -> None:
        """No plan this generation: a first plan fails the task; a revision ends it as it is."""
        if state.generation == 1:
            await self._end(submission, meta, state, TaskStatus.FAILED, reason)
            return
        log.warning("revision_given_up", generation=state.generation, reason=reason)
        await self.store.update_planning(submission.task_id, given_up(state.generation, reason))
        await self.host.finish(submission.task_id)

    async def _dispatch(self, submission: TaskSubmitted, state: PlanningState) -> None:
        if state.status != S.PENDING:
            return
        role = self.config.planning.role
        given = self._input(submission, state)
        prompt = PROMPT
        if state.generation > 1:
            meta = await self.store.read_meta(submission.task_id)
            standing = await self._standing(submission.task_id, meta) if meta else None
            if standing is None:
                return
            given["revision"] = revision.revision_input(
                state.generation,
                standing.graph,
                standing.states,
                standing.superseded,
                standing.left,
            )
            prompt += "\n\n" + revision.REVISE
        if state.rejected:
            prompt += CORRECTION
        with tracing.under(submission, PLANNING_SUBTASK):
            await self.events.publish(
                SubTaskAssigned(
                    task_id=submission.task_id,
                    subtask_id=PLANNING_SUBTASK,
                    attempt=state.attempt,
                    role=role,
                    goal=submission.goal,
                    prompt=prompt,
                    input=given,
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
