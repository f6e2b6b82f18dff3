"""The scheduler: accept a task, dispatch ready sub-tasks, apply results, finish the task.

Work is O(V+E) over a task's life: each sub-task's dependency list grows once per edge,
a failure blocks each transitive dependent once, and only finishing reads every sub-task.
Every step is idempotent, so a redelivered event (after a crash) completes what was left:
dependency marks are set-adds, dispatches carry a `Nats-Msg-Id`, and finished sub-tasks are
counted in a bitmap rather than a counter.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from hivebus.contracts import (
    SUBTASK_TERMINAL,
    DependencyOutput,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskStatus,
    SubTaskSummary,
    TaskFinished,
    TaskRejected,
    TaskStatus,
    TaskSubmitted,
    Usage,
    transition,
)
from hivebus.core import Clock, HivebusConfig, SystemClock, get_logger
from hivebus.orchestrator.graph import Graph, GraphCache
from hivebus.orchestrator.state import StateStore, SubTaskState, TaskMeta, set_bits
from hivebus.orchestrator.validation import validate_submission

log = get_logger(__name__)

S = SubTaskStatus


class Outbox(Protocol):
    """Where the scheduler's decisions go (the bus, or a list in tests)."""

    async def dispatch(self, assignment: SubTaskAssigned) -> None:
        """Publish a sub-task to its role (idempotent by message id)."""
        ...

    async def rejected(self, event: TaskRejected) -> None:
        """Publish a rejection."""
        ...

    async def finished(self, event: TaskFinished) -> None:
        """Publish the end of a task (idempotent by message id)."""
        ...


class Scheduler:
    """Turns submissions and results into dispatches and a final `TaskFinished`."""

    def __init__(
        self,
        store: StateStore,
        outbox: Outbox,
        config: HivebusConfig,
        clock: Clock | None = None,
    ) -> None:
        """Schedule with state in `store`, effects through `outbox`."""
        self.store = store
        self.outbox = outbox
        self.config = config
        self.clock = clock or SystemClock()
        self.graphs = GraphCache()

    # -- submissions ---------------------------------------------------------------------

    async def submit(self, raw: Any, task_id: str) -> None:
        """Validate and start a task; answer bad input with one `TaskRejected`."""
        submission, errors = validate_submission(raw, self.config)
        if submission is None:
            await self.outbox.rejected(TaskRejected(task_id=task_id, errors=errors))
            return
        stored = await self.store.create_plan(submission)
        if stored.event_id != submission.event_id:
            log.info("duplicate_submission", task_id=task_id, kept=stored.event_id)
        graph = self._remember(stored)
        for spec in stored.plan.subtasks if stored.plan else ():
            await self.store.update_subtask(task_id, spec.id, _create_state(spec.id, spec.role))
        now = self.clock.now()

        def start(cur: TaskMeta | None) -> TaskMeta | None:
            if cur is not None:
                return None
            status = transition(
                transition(TaskStatus.SUBMITTED, TaskStatus.PLANNING), TaskStatus.RUNNING
            )
            return TaskMeta(task_id=task_id, status=status, total=graph.size, submitted_at=now)

        meta = await self.store.update_meta(task_id, start)
        if meta is None or meta.status != TaskStatus.RUNNING:
            return
        for root in graph.roots:
            await self._dispatch_if_ready(stored, graph, root)

    def _remember(self, submission: TaskSubmitted) -> Graph:
        graph = self.graphs.get(submission.task_id)
        if graph is None:
            assert submission.plan is not None  # noqa: S101 - accepted submissions have plans
            graph = Graph.from_plan(submission.plan)
            self.graphs.put(submission.task_id, graph)
        return graph

    async def _load(self, task_id: str) -> tuple[TaskSubmitted, Graph] | None:
        submission = await self.store.load_plan(task_id)
        if submission is None or submission.plan is None:
            return None
        return submission, self._remember(submission)

    # -- dispatch ------------------------------------------------------------------------

    async def _dispatch_if_ready(self, submission: TaskSubmitted, graph: Graph, sid: str) -> None:
        spec = graph.specs[sid]
        needed = graph.in_degree[sid]

        def make_ready(cur: SubTaskState | None) -> SubTaskState | None:
            if cur is None or cur.status != S.PENDING or cur.deps_done < needed:
                return None
            return cur.model_copy(update={"status": transition(cur.status, S.READY)})

        state = await self.store.update_subtask(submission.task_id, sid, make_ready)
        if state is None or state.status != S.READY:
            return
        dependencies = []
        for dep in spec.depends_on:
            dep_state = await self.store.read_subtask(submission.task_id, dep)
            dependencies.append(
                DependencyOutput(subtask_id=dep, output=dep_state.output if dep_state else None)
            )
        role = self.config.roles[spec.role]
        await self.outbox.dispatch(
            SubTaskAssigned(
                task_id=submission.task_id,
                subtask_id=sid,
                attempt=state.attempt,
                role=spec.role,
                goal=submission.goal,
                prompt=spec.prompt,
                input=spec.input,
                limits=spec.limits or role.limits,
                model=spec.model,
                output_schema=spec.output_schema,
                subtask_kind=spec.kind,
                budget=submission.budget,
                dependencies=dependencies,
            )
        )

        def mark_dispatched(cur: SubTaskState | None) -> SubTaskState | None:
            if cur is None or cur.status != S.READY:
                return None
            return cur.model_copy(update={"status": transition(cur.status, S.DISPATCHED)})

        await self.store.update_subtask(submission.task_id, sid, mark_dispatched)

    # -- results -------------------------------------------------------------------------

    async def started(self, event: SubTaskStarted) -> None:
        """A run began: `dispatched -> running` (ignored if stale or already further)."""

        def run(cur: SubTaskState | None) -> SubTaskState | None:
            if cur is None or cur.attempt != event.attempt:
                return None
            if cur.status not in {S.READY, S.DISPATCHED}:
                return None
            return cur.model_copy(
                update={"status": _advance(cur.status, S.RUNNING), "run_id": event.run_id}
            )

        await self.store.update_subtask(event.task_id, event.subtask_id, run)

    async def finished(self, event: SubTaskFinished) -> None:
        """Apply a terminal result once, then unblock or block dependents, then maybe finish."""
        loaded = await self._load(event.task_id)
        if loaded is None or event.subtask_id not in loaded[1].specs:
            log.warning(
                "result_for_unknown_subtask", task_id=event.task_id, subtask_id=event.subtask_id
            )
            return
        submission, graph = loaded

        def apply(cur: SubTaskState | None) -> SubTaskState | None:
            if cur is None or cur.attempt != event.attempt or cur.status in SUBTASK_TERMINAL:
                return None  # stale attempt or already applied: a duplicate changes nothing
            return cur.model_copy(
                update={
                    "status": _advance(cur.status, event.status),
                    "run_id": event.run_id,
                    "reason": event.reason,
                    "output": event.output,
                    "usage": event.usage,
                    "flags": event.flags,
                }
            )

        state = await self.store.update_subtask(event.task_id, event.subtask_id, apply)
        if state is None or state.status not in SUBTASK_TERMINAL:
            return
        meta = await self._propagate(submission, graph, state)
        if meta is not None and meta.finished >= meta.total:
            await self._finish(submission, graph)

    async def _propagate(
        self, submission: TaskSubmitted, graph: Graph, state: SubTaskState
    ) -> TaskMeta | None:
        """Unblock (completed) or block (anything else) the dependents, then count it finished.

        Skipped when the bitmap already counts it: then its propagation finished before.
        """
        meta = await self.store.read_meta(submission.task_id)
        if meta is None or meta.is_finished(graph.index[state.id]):
            return meta
        done = [state.id]
        if state.status == S.COMPLETED:
            for dependent in graph.dependents[state.id]:
                await self._mark_dependency_done(submission, graph, dependent, state.id)
        else:
            done.extend(await self._block_dependents(submission.task_id, graph, meta, state))
        return await self.store.update_meta(
            submission.task_id,
            lambda cur: cur.with_finished([graph.index[s] for s in done]) if cur else None,
        )

    async def _mark_dependency_done(
        self, submission: TaskSubmitted, graph: Graph, dependent: str, dep: str
    ) -> None:
        size = graph.in_degree[dependent]
        position = graph.dep_position[dependent, dep]

        def add(cur: SubTaskState | None) -> SubTaskState | None:
            if cur is None:
                return None
            bits, added = set_bits(cur.deps_bits, size, [position])
            if not added:
                return None
            return cur.model_copy(update={"deps_bits": bits, "deps_done": cur.deps_done + added})

        await self.store.update_subtask(submission.task_id, dependent, add)
        await self._dispatch_if_ready(submission, graph, dependent)

    async def _block_dependents(
        self, task_id: str, graph: Graph, meta: TaskMeta, root: SubTaskState
    ) -> list[str]:
        """Block every transitive dependent of a failed sub-task, naming it as the root cause."""
        reason = f"dependency {root.id!r} ended {root.status.value}: {root.reason}"
        blocked: list[str] = []
        seen: set[str] = set()
        queue = deque(graph.dependents[root.id])
        while queue:
            sid = queue.popleft()
            if sid in seen or meta.is_finished(graph.index[sid]):
                continue  # a finished block already covered this sub-tree
            seen.add(sid)

            def block(cur: SubTaskState | None) -> SubTaskState | None:
                if cur is None or cur.status != S.PENDING:
                    return None
                return cur.model_copy(
                    update={
                        "status": transition(cur.status, S.BLOCKED),
                        "blocked_by": root.id,
                        "reason": reason,
                    }
                )

            state = await self.store.update_subtask(task_id, sid, block)
            if state is not None and state.status == S.BLOCKED:
                blocked.append(sid)
                queue.extend(graph.dependents[sid])
        return blocked

    # -- the end -------------------------------------------------------------------------

    async def _finish(self, submission: TaskSubmitted, graph: Graph) -> None:
        """Store `TaskFinished` once, publish it, then close the task.

        Closing comes last, so a closed task's result was published: a late duplicate result
        publishes nothing, and a crash before closing republishes the same stored event.
        """
        task_id = submission.task_id
        meta = await self.store.read_meta(task_id)
        if meta is None or meta.status != TaskStatus.RUNNING:
            return
        result = await self.store.read_result(task_id)
        if result is None:
            states = []
            for sid in graph.specs:
                state = await self.store.read_subtask(task_id, sid)
                if state is not None:
                    states.append(state)
            result = await self.store.create_result(
                summarize(task_id, graph, states, meta, self.clock)
            )

        def close(cur: TaskMeta | None) -> TaskMeta | None:
            if cur is None or cur.status != TaskStatus.RUNNING:
                return None
            return cur.model_copy(
                update={"status": transition(cur.status, result.status), "reason": result.reason}
            )

        await self.outbox.finished(result)
        await self.store.update_meta(task_id, close)


_WAY_TO_RUNNING = (S.READY, S.DISPATCHED, S.RUNNING)


def _advance(current: SubTaskStatus, target: SubTaskStatus) -> SubTaskStatus:
    """Move to `target`, first through the steps a fast agent's event may have overtaken.

    A result can arrive before the scheduler recorded `dispatched` (the publish was acked
    but the orchestrator crashed, or the agent was quicker) or before `started` was applied;
    each intermediate move still goes through the transition table.
    """
    if current in _WAY_TO_RUNNING:
        for step in _WAY_TO_RUNNING[_WAY_TO_RUNNING.index(current) + 1 :]:
            if target == step:
                break
            current = transition(current, step)
    return transition(current, target)


def _create_state(
    subtask_id: str, role: str
) -> Callable[[SubTaskState | None], SubTaskState | None]:
    """A change that creates a pending sub-task state unless one exists."""

    def create(cur: SubTaskState | None) -> SubTaskState | None:
        return SubTaskState(id=subtask_id, role=role) if cur is None else None

    return create


def summarize(
    task_id: str, graph: Graph, states: list[SubTaskState], meta: TaskMeta, clock: Clock
) -> TaskFinished:
    """The task's outcome from its sub-tasks: status, output, usage and a summary of each."""
    by_id = {state.id: state for state in states}
    completed = [s for s in states if s.status == S.COMPLETED]
    usage = Usage()
    for state in states:
        usage = usage.plus(state.usage)
    usage.wall_s = round((clock.now() - meta.submitted_at).total_seconds(), 3)
    # The output: completed sub-tasks none of whose dependents completed (the sinks, if all ran).
    frontier = {
        s.id: s.output
        for s in completed
        if not any(by_id.get(d) and by_id[d].status == S.COMPLETED for d in graph.dependents[s.id])
    }
    if len(completed) == len(states):
        status, degraded = TaskStatus.COMPLETED, False
        reason = f"all {len(states)} sub-tasks completed"
    else:
        failed = [s for s in states if s.status not in {S.COMPLETED, S.BLOCKED}]
        if completed:
            status = TaskStatus.PARTIAL
        elif failed and all(s.status == S.BUDGET_EXCEEDED for s in failed):
            status = TaskStatus.BUDGET_EXCEEDED
        else:
            status = TaskStatus.FAILED
        degraded = True
        blocked = [s for s in states if s.status == S.BLOCKED]
        causes = "; ".join(f"{s.id} {s.status.value}: {s.reason}" for s in failed)
        reason = f"{len(completed)} of {len(states)} sub-tasks completed; {causes}"
        if blocked:
            reason += f"; {len(blocked)} blocked"
    summaries = [
        SubTaskSummary(
            id=s.id,
            role=s.role,
            status=s.status,
            reason=s.reason,
            blocked_by=s.blocked_by,
            usage=s.usage,
            output=s.output,
            flags=s.flags,
        )
        for s in sorted(states, key=lambda s: graph.index[s.id])
    ]
    return TaskFinished(
        task_id=task_id,
        status=status,
        reason=reason,
        degraded=degraded,
        output=frontier or None,
        usage=usage,
        subtasks=summaries,
    )
