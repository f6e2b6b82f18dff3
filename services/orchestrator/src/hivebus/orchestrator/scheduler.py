"""The scheduler: accept a task, dispatch ready sub-tasks, apply results, finish the task.

Work is O(V+E) over a task's life: each sub-task's dependency list grows once per edge,
a failure blocks each transitive dependent once, and only finishing reads every sub-task.
Every step is idempotent, so a redelivered event (after a crash) completes what was left:
dependency marks are set-adds, dispatches carry a `Nats-Msg-Id`, and finished sub-tasks are
counted in a bitmap rather than a counter. The state changes themselves are pure functions
in `changes`; this module decides which to apply and what to publish, and is near
400 lines because a task's whole life (accept, dispatch, results, stop, finish) reads here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from hivebus.contracts import (
    PLANNING_SUBTASK,
    SUBTASK_TERMINAL,
    TASK_TERMINAL,
    ApprovalResolved,
    DeadLetter,
    DeadlineReached,
    DependencyOutput,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskState,
    SubTaskStatus,
    TaskMeta,
    TaskRejected,
    TaskStatus,
    TaskSubmitted,
)
from hivebus.contracts.subjects import DeadLetterKind
from hivebus.core import Clock, EventSink, HivebusConfig, SystemClock, get_logger
from hivebus.core.together import together
from hivebus.orchestrator import approvals, changes, tracing
from hivebus.orchestrator.graph import Graph, GraphCache
from hivebus.orchestrator.handover import NoteWatch, hand_over, is_large, output_note
from hivebus.orchestrator.planning import Planner, planner_usage
from hivebus.orchestrator.state import StateStore
from hivebus.orchestrator.summary import summarize, summary_note
from hivebus.orchestrator.validation import validate_submission

log = get_logger(__name__)

S = SubTaskStatus
ItemT = TypeVar("ItemT")
ValueT = TypeVar("ValueT")

_STOPPED = frozenset({S.CANCELLED, S.TIMEOUT})
"""How `stop` ends a sub-task that is not running."""

CONCURRENCY = 64
"""Dispatches (and dependency marks) one event may have in flight at once."""


class Tracked(Generic[ValueT]):
    """A change that remembers whether its last run made a value: whether the update wrote.

    Compare-and-set runs a change again after a lost race or a stale cached value, and the
    last run decides what is written; `wrote` is that run's answer.
    """

    def __init__(self, change: Callable[[ValueT | None], ValueT | None]) -> None:
        """Track `change`."""
        self.change = change
        self.wrote = False

    def __call__(self, current: ValueT | None) -> ValueT | None:
        """Run the change, remembering whether it made a value."""
        updated = self.change(current)
        self.wrote = updated is not None
        return updated


async def _each(items: Iterable[ItemT], work: Callable[[ItemT], Awaitable[object]]) -> None:
    """Run `work` on every item, at most `CONCURRENCY` at once; the first error is raised."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(item: ItemT) -> None:
        async with gate:
            await work(item)

    await asyncio.gather(*(one(item) for item in items))


class Scheduler:
    """Turns submissions and results into dispatches and a final `TaskFinished`."""

    def __init__(
        self,
        store: StateStore,
        events: EventSink,
        config: HivebusConfig,
        notes: NoteWatch,
        clock: Clock | None = None,
    ) -> None:
        """Schedule with state in `store`, publishing through `events`.

        `notes` tells when a large dependency output's note is readable (see `handover`).
        """
        self.store = store
        self.events = events
        self.config = config
        self.notes = notes
        self.clock = clock or SystemClock()
        self.graphs = GraphCache(256)
        self.planner = Planner(store, events, config, self.clock, self)

    # -- submissions ---------------------------------------------------------------------

    async def submit(self, raw: Any, task_id: str) -> None:
        """Validate and start a task; answer bad input with one `TaskRejected`."""
        submission, errors = validate_submission(raw, self.config)
        if submission is None:
            await self.events.publish(TaskRejected(task_id=task_id, errors=errors))
            return
        stored = await self.store.create_plan(submission)
        if stored.event_id != submission.event_id:
            log.info("duplicate_submission", task_id=task_id, kept=stored.event_id)
        if stored.plan is None:
            await self.planner.start(stored)
            return
        graph = self._remember(stored)
        start = Tracked(changes.start_task(task_id, graph.size, self.clock.now()))
        meta = await self.store.update_meta(task_id, start)
        if meta is None or meta.status != TaskStatus.RUNNING:
            return
        deadline = meta.submitted_at + timedelta(seconds=stored.budget.deadline_s)
        # A redelivery after a crash between the two publishes both again: each is stored once.
        await together(
            self._publish(stored, DeadlineReached(task_id=task_id, deadline=deadline)),
            self.start_plan(stored, accepted_now=start.wrote),
        )

    async def start_plan(self, stored: TaskSubmitted, *, accepted_now: bool = False) -> None:
        """Dispatch the roots of an accepted plan (again after a redelivery: once each).

        `accepted_now`: this call's write started the task, so no root was dispatched before
        and none needs reading first.
        """
        task_id = stored.task_id
        graph = self._remember(stored)

        async def dispatch_root(root: str) -> None:
            # Read first: a repeated submission (or its redelivery) dispatches no root twice.
            if accepted_now or changes.dispatchable(
                await self.store.read_subtask(task_id, root), 0
            ):
                await self._dispatch(stored, graph, root)

        await _each(graph.roots, dispatch_root)

    async def start_revision(self, stored: TaskSubmitted, base_size: int) -> None:
        """Dispatch what can start of a revision's sub-tasks (those after `base_size`).

        Their dependencies on the plan before are all completed: each is marked at once, so
        a sub-task whose other dependencies are the revision's own waits only for those.
        Done again after a crash, the marks are set-adds and the dispatches go out once.
        """
        task_id = stored.task_id
        graph = self._remember(stored, replace=True)
        assert stored.plan is not None  # noqa: S101 - a revision has a plan
        added = stored.plan.subtasks[base_size:]
        before = {spec.id for spec in stored.plan.subtasks[:base_size]}

        async def begin(sid: str) -> None:
            needed = graph.in_degree[sid]
            state = await self.store.read_subtask(task_id, sid)
            for dep in dict.fromkeys(graph.specs[sid].depends_on):
                if dep in before:
                    position = graph.dep_position[sid, dep]
                    mark = changes.add_dependency(sid, graph.specs[sid].role, needed, position)
                    state = await self.store.update_subtask(task_id, sid, mark)
            if changes.dispatchable(state, needed):
                await self._dispatch(stored, graph, sid)

        await _each([spec.id for spec in added], begin)

    async def finish(self, task_id: str) -> None:
        """Finish a task as it stands (its revision was not made), once."""
        loaded = await self.load(task_id, fresh=True)
        if loaded is not None:
            await self._finish(*loaded)

    def _remember(self, submission: TaskSubmitted, *, replace: bool = False) -> Graph:
        cached = self.graphs.get(submission.task_id)
        if cached is not None and not replace:
            return cached[1]
        assert submission.plan is not None  # noqa: S101 - accepted submissions have plans
        graph = Graph.from_plan(submission.plan)
        self.graphs.put(submission.task_id, (submission, graph))
        return graph

    async def load(
        self, task_id: str, subtask_id: str | None = None, *, fresh: bool = False
    ) -> tuple[TaskSubmitted, Graph] | None:
        """A task's accepted submission and its graph (cached), or None when there is none.

        A revision (`planning.replan`) adds sub-tasks to a plan: a cached graph that does not
        know `subtask_id` is read again, and so is any graph when `fresh`.
        """
        cached = self.graphs.get(task_id)
        if (
            cached is not None
            and not fresh
            and (subtask_id is None or subtask_id in cached[1].specs)
        ):
            return cached
        submission = await self.store.load_plan(task_id)
        if submission is not None and submission.plan is None:
            submission = await self.store.load_planned(task_id)  # planned from its goal
        if submission is None or submission.plan is None:
            return None
        revised = await self.store.load_revised(task_id)
        if revised is not None:
            submission = revised.submission
        return submission, self._remember(submission, replace=True)

    # -- dispatch ------------------------------------------------------------------------

    async def _dispatch(
        self,
        submission: TaskSubmitted,
        graph: Graph,
        sid: str,
        attempt: int = 1,
        resume: list[ApprovalResolved] | None = None,
    ) -> None:
        """Publish a dispatchable sub-task, then record it `dispatched` (in one write).

        Done again after a crash, the publish carries the same message id, so agents see it
        once; the write finds the sub-task already further and changes nothing. With `resume`
        (the resolutions of its approvals) it dispatches a paused run again, under a message
        id of its own, and records it `ready -> dispatched`.
        """
        spec = graph.specs[sid]
        task_id = submission.task_id
        dependencies = await hand_over(
            task_id,
            list(dict.fromkeys(spec.depends_on)),
            lambda dep: self.store.read_subtask(task_id, dep),
            self.notes,
        )
        with tracing.under(submission, sid):
            await self.events.publish(
                self._assignment(
                    submission,
                    graph,
                    sid,
                    attempt=attempt,
                    resume=resume,
                    dependencies=dependencies,
                )
            )
        mark = changes.mark_resumed(attempt) if resume else changes.mark_dispatched(sid, spec.role)
        await self.store.update_subtask(task_id, sid, tracing.timed(mark, self.clock.now()))

    def _assignment(
        self,
        submission: TaskSubmitted,
        graph: Graph,
        sid: str,
        *,
        attempt: int,
        resume: list[ApprovalResolved] | None,
        dependencies: list[DependencyOutput],
    ) -> SubTaskAssigned:
        spec = graph.specs[sid]
        task_id = submission.task_id
        return SubTaskAssigned(
            task_id=task_id,
            subtask_id=sid,
            attempt=attempt,
            role=spec.role,
            goal=submission.goal,
            prompt=spec.prompt,
            input=spec.input,
            limits=spec.limits or self.config.roles[spec.role].limits,
            model=spec.model,
            output_schema=spec.output_schema,
            subtask_kind=spec.kind,
            budget=submission.budget,
            dependencies=dependencies,
            resume=resume or [],
        )

    async def resume(self, submission: TaskSubmitted, graph: Graph, state: SubTaskState) -> None:
        """Dispatch a paused sub-task again, `ready` with the resolutions of its approvals."""
        await self._dispatch(submission, graph, state.id, state.attempt, state.resume)

    # -- results -------------------------------------------------------------------------

    async def started(self, event: SubTaskStarted) -> None:
        """A run began: `dispatched -> running` (ignored if stale or already further)."""
        if event.subtask_id == PLANNING_SUBTASK:
            await self.planner.started(event)
            return
        loaded = await self.load(event.task_id, event.subtask_id)
        if loaded is None or event.subtask_id not in loaded[1].specs:
            return
        graph = loaded[1]
        sid = event.subtask_id
        running = changes.mark_running(graph.specs[sid].role, graph.in_degree[sid], event)
        await self.store.update_subtask(event.task_id, sid, running)

    async def finished(self, event: SubTaskFinished) -> None:
        """Apply a terminal result once, then unblock or block dependents, then maybe finish."""
        if event.subtask_id == PLANNING_SUBTASK:
            submission = await self.store.load_plan(event.task_id)
            if submission is not None:
                await self.planner.finished(submission, event)
            return
        loaded = await self.load(event.task_id, event.subtask_id)
        if loaded is None or event.subtask_id not in loaded[1].specs:
            log.warning(
                "result_for_unknown_subtask", task_id=event.task_id, subtask_id=event.subtask_id
            )
            return
        submission, graph = loaded
        sid = event.subtask_id
        apply = Tracked(changes.apply_result(graph.specs[sid].role, graph.in_degree[sid], event))
        state = await self.store.update_subtask(
            event.task_id, event.subtask_id, tracing.timed(apply, self.clock.now())
        )
        if state is None or state.status not in SUBTASK_TERMINAL:
            return
        meta, counted = await self._propagate(submission, graph, state, applied_now=apply.wrote)
        if meta is not None and meta.finished >= meta.total:
            await self._finish(submission, graph, meta, counted_last=counted)

    async def _propagate(
        self, submission: TaskSubmitted, graph: Graph, state: SubTaskState, *, applied_now: bool
    ) -> tuple[TaskMeta | None, bool]:
        """Unblock (completed) or block (anything else) the dependents, then count it finished.

        Skipped when the bitmap already counts it: then its propagation finished before. A
        result this event applied (`applied_now`) cannot be counted yet, so the meta is read
        only when a dependent could start (a stopping task starts nothing new) or is blocked.

        Returns:
            The meta after, and whether this call's count brought it to every sub-task.
        """
        task_id = submission.task_id
        seen: list[TaskMeta | None] = []

        async def current_meta() -> TaskMeta | None:
            if not seen:
                seen.append(await self.store.read_meta(task_id))
            return seen[0]

        if not applied_now:
            meta = await current_meta()
            if meta is None or meta.is_finished(graph.index[state.id]):
                return meta, False
        done = [state.id]
        if state.status == S.COMPLETED:
            if is_large(state.output):
                await self.events.publish(output_note(task_id, state.id, state.output))
            await self._unblock_dependents(submission, graph, state, current_meta)
        else:
            meta = await current_meta()
            if meta is None:
                return None, False
            done.extend(await self._block_dependents(task_id, graph, meta, state))
        finished = Tracked(changes.count_finished([graph.index[s] for s in done]))
        after = await self.store.update_meta(task_id, finished)
        return after, finished.wrote and after is not None and after.finished >= after.total

    async def _unblock_dependents(
        self,
        submission: TaskSubmitted,
        graph: Graph,
        state: SubTaskState,
        current_meta: Callable[[], Awaitable[TaskMeta | None]],
    ) -> None:
        """Mark a completed sub-task done in each dependent; dispatch those it made ready."""
        task_id = submission.task_id

        async def unblock(dependent: str) -> None:
            add = changes.add_dependency(
                dependent,
                graph.specs[dependent].role,
                graph.in_degree[dependent],
                graph.dep_position[dependent, state.id],
            )
            after = await self.store.update_subtask(task_id, dependent, add)
            if after is None or not changes.dispatchable(after, graph.in_degree[dependent]):
                return
            meta = await current_meta()
            if meta is not None and meta.ending is None:  # a stopping task starts nothing new
                await self._dispatch(submission, graph, dependent, after.attempt)

        await _each(graph.dependents[state.id], unblock)

    async def _block_dependents(
        self, task_id: str, graph: Graph, meta: TaskMeta, root: SubTaskState
    ) -> list[str]:
        """Block every transitive dependent of a failed sub-task, naming it as the root cause.

        In a task that is stopping (a cancel or its deadline), they end `cancelled` instead, as
        `stop` ends what never started: a run the stop cancelled may report before `stop`
        reaches its dependents, and they did not fail because of it.
        """
        reason = f"dependency {root.id!r} ended {root.status.value}: {root.reason}"
        ends_as = S.BLOCKED if meta.ending is None else S.CANCELLED
        blocked: list[str] = []
        seen: set[str] = set()
        queue = deque(graph.dependents[root.id])
        while queue:
            sid = queue.popleft()
            if sid in seen or meta.is_finished(graph.index[sid]):
                continue  # a finished block already covered this sub-tree
            seen.add(sid)
            role = graph.specs[sid].role
            end = (
                changes.block(sid, role, root.id, reason)
                if meta.ending is None
                else changes.cancel_waiting(sid, role, meta.reason or reason, meta.ending)
            )
            state = await self.store.update_subtask(
                task_id, sid, tracing.timed(end, self.clock.now())
            )
            if state is not None and state.status == ends_as:
                blocked.append(sid)
                queue.extend(graph.dependents[sid])
        return blocked

    # -- cancel and deadline --------------------------------------------------------------

    async def stop(self, task_id: str, ending: TaskStatus, reason: str) -> None:
        """Cancel a task or end it at its deadline.

        Runs stop at their next step boundary, nothing new starts, a sub-task waiting for a
        person ends where it waits (its approvals closed), and the task finishes once every
        sub-task has ended. Cancelling what is not running is O(V), once; done again (a run
        that paused after the cancel) it ends what paused. Marking the ending comes first: for
        a task that has ended it writes nothing and tells so, and then the stop has cost that
        one read (every task's deadline comes due, finished or not: the schedule stays in
        CONTROL; loading the plan again would also push live tasks' graphs out of the cache).
        """
        meta = await self.store.update_meta(task_id, changes.mark_ending(ending, reason))
        if meta is not None and meta.status in TASK_TERMINAL:
            log.debug("stop_for_ended_task", task_id=task_id, status=meta.status.value)
            return
        loaded = await self.load(task_id)
        if loaded is None:
            goal = await self.store.load_plan(task_id)
            if goal is not None and goal.plan is None:  # still planning
                await self.planner.stop(goal, ending, reason)
                return
            log.warning("stop_for_unknown_task", task_id=task_id)
            return
        if meta is None or meta.status != TaskStatus.RUNNING:
            return
        await self.store.mark_cancelled(task_id)
        ending = meta.ending or ending  # the first of a cancel and the deadline decides
        if self.config.planning.replan:  # a revision may be in the making, or reviewed
            await self.planner.close_review(task_id, f"the task is ending {ending.value}: {reason}")
            loaded = await self.load(task_id, fresh=True) or loaded
        submission, graph = loaded
        ended = await self._end_waiting(task_id, graph, meta, ending, reason)
        meta = await self.store.update_meta(task_id, changes.count_finished(ended))
        if meta is not None and meta.finished >= meta.total:
            await self._finish(submission, graph)

    async def _end_waiting(
        self, task_id: str, graph: Graph, meta: TaskMeta, ending: TaskStatus, reason: str
    ) -> list[int]:
        """End each sub-task of a stopping task that no run holds; their indexes in `graph`.

        A sub-task waiting for a person ends where it waits, its approvals closed. A run that
        began is left to end at its next step boundary.
        """
        closing = approvals.close(f"the task is ending {ending.value}: {reason}")
        ended = []
        for sid, spec in graph.specs.items():
            if meta.is_finished(graph.index[sid]) or await self._run_began(task_id, sid):
                continue
            cancel = changes.cancel_waiting(sid, spec.role, reason, ending)
            state = await self.store.update_subtask(
                task_id, sid, tracing.timed(cancel, self.clock.now())
            )
            if state is not None and state.status in _STOPPED:
                ended.append(graph.index[sid])
                for ap in state.pending_approvals:
                    await self.store.update_approval(task_id, ap, closing)
        return ended

    async def _run_began(self, task_id: str, sid: str) -> bool:
        """Whether a dispatched sub-task's run began; one that already ended is applied now.

        Its agent may have reported while no orchestrator ran (the report then waits on EVENTS
        behind this stop): the run's checkpoint tells. A result that exists counts, and a run
        in progress ends at its next step boundary, as a running one does.
        """
        state = await self.store.read_subtask(task_id, sid)
        if state is None or state.status != S.DISPATCHED:
            return False
        run = await self.store.read_run(task_id, sid, state.attempt)
        if run is not None and run.finished is not None:
            await self.finished(run.finished)
        return run is not None

    # -- the end -------------------------------------------------------------------------

    async def _publish(self, submission: TaskSubmitted, message: BaseModel) -> None:
        """Publish a task-level message under the task's workflow span."""
        with tracing.under(submission):
            await self.events.publish(message)

    async def _finish(
        self,
        submission: TaskSubmitted,
        graph: Graph,
        meta: TaskMeta | None = None,
        *,
        counted_last: bool = False,
    ) -> None:
        """Store `TaskFinished` once, publish it, then close the task.

        Closing comes last, so a closed task's result was published: a late duplicate result
        publishes nothing, and a crash before closing republishes the same stored event.
        `meta` is the meta just written, if the caller has it; `counted_last` says that the
        caller's count made every sub-task finished, so no result can be stored yet.
        """
        task_id = submission.task_id
        if meta is None:
            meta = await self.store.read_meta(task_id)
        if meta is None or meta.status != TaskStatus.RUNNING:
            return
        if meta.planning.revisions:  # this process may hold an earlier generation's graph
            submission, graph = await self.load(task_id, fresh=True) or (submission, graph)
        result = None if counted_last else await self.store.read_result(task_id)
        if result is None:
            states = [
                await self.store.read_subtask(task_id, sid) or changes.pending(sid, spec.role)
                for sid, spec in graph.specs.items()
            ]
            if await self.planner.revise(submission, meta, states):
                return  # a revised plan is being made: the task goes on
            summary = summarize(task_id, graph, states, meta, self.clock)
            usage, reason = summary.usage, summary.reason
            if meta.planning.source == "planned" or self.config.planning.replan:
                planning = await self.store.read_planning(task_id)  # its runs count too
                usage = usage.plus(planner_usage(planning)).model_copy(
                    update={"wall_s": usage.wall_s}
                )
                if planning is not None and planning.gave_up:
                    reason += f"; not re-planned: {planning.reason}"
            result = await self.store.create_result(
                summary.model_copy(
                    update={"usage": usage, "reason": reason, "planning": meta.planning}
                )
            )
            tracing.record(submission, graph, states, meta, result)
            if result.status == TaskStatus.TIMEOUT and result.output is None:
                await self._publish(
                    submission,
                    DeadLetter(
                        task_id=task_id,
                        why=DeadLetterKind.DEADLINE.value,
                        original=submission.model_dump(mode="json"),
                        usage=result.usage,
                        errors=[result.reason],
                    ),
                )
        await together(
            self._publish(submission, result),
            self._publish(submission, summary_note(submission, result)),
        )
        closed = await self.store.update_meta(
            task_id, changes.close_task(result.status, result.reason)
        )
        if closed is not None and closed.status != TaskStatus.RUNNING:
            self.graphs.pop(task_id)  # a late event reads it again; memory stays bounded
            self.store.forget_task(task_id, graph.specs)
