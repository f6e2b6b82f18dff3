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
from datetime import timedelta
from typing import Any, Protocol

from hivebus.contracts import (
    SUBTASK_TERMINAL,
    DeadLetter,
    DeadlineReached,
    DependencyOutput,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskStatus,
    TaskFinished,
    TaskRejected,
    TaskStatus,
    TaskSubmitted,
    transition,
)
from hivebus.contracts.knowledge import NoteWrite, output_note_path
from hivebus.contracts.subjects import DeadLetterKind
from hivebus.core import Clock, HivebusConfig, SystemClock, get_logger
from hivebus.orchestrator.graph import Graph, GraphCache
from hivebus.orchestrator.state import StateStore, SubTaskState, TaskMeta, set_bits
from hivebus.orchestrator.summary import (
    INLINE_OUTPUT_CHARS,
    OUTPUT_PREVIEW_CHARS,
    output_note,
    output_text,
    summarize,
    summary_note,
)
from hivebus.orchestrator.validation import validate_submission

log = get_logger(__name__)

S = SubTaskStatus


class Outbox(Protocol):
    """Where the scheduler's decisions go (the bus, or a list in tests)."""

    async def schedule_deadline(self, event: DeadlineReached) -> None:
        """Arrange for `event` to come back when the task's deadline is due (durably)."""
        ...

    async def dead_letter(self, event: DeadLetter) -> None:
        """Put something that cannot finish where a person will see it."""
        ...

    async def note(self, write: NoteWrite) -> None:
        """Hand a note to the knowledge store (applied by its writer, idempotent by id)."""
        ...

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
        deadline = meta.submitted_at + timedelta(seconds=stored.budget.deadline_s)
        await self.outbox.schedule_deadline(DeadlineReached(task_id=task_id, deadline=deadline))
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
            output = dep_state.output if dep_state else None
            text = output_text(output)
            if len(text) > INLINE_OUTPUT_CHARS:  # by reference: the note written on completion
                dependencies.append(
                    DependencyOutput(
                        subtask_id=dep,
                        output=text[:OUTPUT_PREVIEW_CHARS] + " [...]",
                        note=output_note_path(submission.task_id, dep),
                    )
                )
            else:
                dependencies.append(DependencyOutput(subtask_id=dep, output=output))
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
        if state.status == S.COMPLETED and len(output_text(state.output)) > INLINE_OUTPUT_CHARS:
            await self.outbox.note(output_note(submission.task_id, state.id, state.output))
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

    # -- cancel and deadline --------------------------------------------------------------

    async def stop(self, task_id: str, ending: TaskStatus, reason: str) -> None:
        """Cancel a task or end it at its deadline.

        Runs stop at their next step boundary, nothing new starts, and the task finishes
        once every sub-task has ended.
        """
        loaded = await self._load(task_id)
        if loaded is None:
            log.warning("stop_for_unknown_task", task_id=task_id)
            return
        submission, graph = loaded

        def mark(cur: TaskMeta | None) -> TaskMeta | None:
            if cur is None or cur.status != TaskStatus.RUNNING or cur.ending is not None:
                return None
            return cur.model_copy(update={"ending": ending, "reason": reason})

        meta = await self.store.update_meta(task_id, mark)
        if meta is None or meta.status != TaskStatus.RUNNING:
            return
        await self.store.mark_cancelled(task_id)

        ended = await self._cancel_waiting(task_id, graph, meta, reason)
        meta = await self.store.update_meta(
            task_id, lambda cur: cur.with_finished(ended) if cur else None
        )
        if meta is not None and meta.finished >= meta.total:
            await self._finish(submission, graph)

    async def _cancel_waiting(
        self, task_id: str, graph: Graph, meta: TaskMeta, reason: str
    ) -> list[int]:
        """Cancel every sub-task not yet running; returns their indexes (once per task: O(V))."""

        def cancel(cur: SubTaskState | None) -> SubTaskState | None:
            if cur is None or cur.status not in {S.PENDING, S.READY, S.DISPATCHED}:
                return None
            return cur.model_copy(
                update={"status": transition(cur.status, S.CANCELLED), "reason": reason}
            )

        ended = []
        for sid in graph.specs:
            if meta.is_finished(graph.index[sid]):
                continue
            state = await self.store.update_subtask(task_id, sid, cancel)
            if state is not None and state.status == S.CANCELLED:
                ended.append(graph.index[sid])
        return ended

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
            if result.status == TaskStatus.TIMEOUT and result.output is None:
                await self.outbox.dead_letter(
                    DeadLetter(
                        task_id=task_id,
                        why=DeadLetterKind.DEADLINE.value,
                        original=submission.model_dump(mode="json"),
                        usage=result.usage,
                        errors=[result.reason],
                    )
                )

        def close(cur: TaskMeta | None) -> TaskMeta | None:
            if cur is None or cur.status != TaskStatus.RUNNING:
                return None
            return cur.model_copy(
                update={"status": transition(cur.status, result.status), "reason": result.reason}
            )

        await self.outbox.finished(result)
        await self.outbox.note(summary_note(submission, result))
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
