"""The agent service: one durable pull consumer per role, shared by all its replicas.

Per message: decode the assignment, take the run over from its checkpoint (fencing any earlier
owner), publish `SubTaskStarted`, run the bounded loop (with `in_progress()` heartbeats),
record the terminal event in the checkpoint, publish `SubTaskFinished`. The handler settles
only through `hivebus.core.settle.Settler`, by the error's own decision: ack on success; a nak
with delay when the bus or a checkpoint is unreachable (retryable); term and dead letter for
an error that no retry can fix; nothing at all when the run was fenced (`RunFencedError`:
another worker holds it and settles its own delivery).

Approvals: a run that pauses for people (`RunPaused`, checkpointed `awaiting_approval`)
publishes every `ApprovalRequested` of the pause and returns without a terminal event: the
message is acked and no worker waits. A dispatch that resumes it carries the resolutions
(`SubTaskAssigned.resume`); they join the checkpoint's approvals and, once none of the pause is
left without one, the run goes on (`SubTaskStarted` again, then the loop). A delivery that
finds the run paused with requests still unanswered publishes them again and is acked.

Large contents: dependency outputs passed by reference are read from the `artifacts` store
for the first prompt; a terminal event too large for the bus travels by reference (the
publisher does that), and one that cannot be stored at all is published `failed` instead,
its output dropped, saying why: once, never a reason to redeliver.

Traces (`tracing`): a delivery records its queue wait; each run is one `invoke_agent` span
around the loop, its record kept in the checkpoint's saves. How a process starts one (the
broker, its subscriber, the connections) is `startup`. A little
over 300 lines because one message's whole way, from the delivery to its settlement, reads
in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from faststream.nats.annotations import NatsMessage
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from hivebus.agent.answers import inline_outputs
from hivebus.agent.approvals import RunPaused, attach
from hivebus.agent.breakers import BreakerEvents, serving
from hivebus.agent.checkpoint import (
    CheckpointStore,
    RunCheckpointHandle,
    RunFencedError,
)
from hivebus.agent.loop import AgentLoop, RunContext, RunOutcome, new_run
from hivebus.agent.modelcall import BudgetGate, ModelCaller
from hivebus.agent.models import Model
from hivebus.agent.role import RoleRuntime
from hivebus.agent.toolstep import ToolRunner
from hivebus.agent.tracing import picked_up, run_span
from hivebus.contracts import (
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskStatus,
    Usage,
    subjects,
)
from hivebus.contracts.runs import RunCheckpoint, RunPhase
from hivebus.core import (
    Clock,
    EventSink,
    Settings,
    Settler,
    SystemClock,
    bind_ids,
    get_logger,
)
from hivebus.core.artifacts import ArtifactNotFoundError, Artifacts, PayloadTooLargeError
from hivebus.core.budget import BudgetLedger
from hivebus.core.knowledge_client import KnowledgeClient
from hivebus.core.reliability import BreakerRegistry
from hivebus.core.together import together

log = get_logger(__name__)

SERVICE_CONTEXT_KEY = "hivebus_agent"
"""Name of the `AgentService` in the broker's FastStream context, where the handler finds it."""


@dataclass(frozen=True)
class AgentBus:
    """The connections a ready service works through."""

    publisher: EventSink
    settler: Settler
    tasks: KeyValue
    """KV `tasks`: read for the cancel flag of a task."""
    checkpoints: CheckpointStore
    ledger: BudgetLedger
    knowledge: KnowledgeClient | None = None
    artifacts: Artifacts | None = None
    """The `artifacts` store: dependency outputs passed by reference are read from it."""


@contextlib.asynccontextmanager
async def heartbeat(msg: NatsMessage, every_s: float) -> AsyncIterator[None]:
    """Keep the work message alive with `in_progress()` while the body runs."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                await msg.in_progress()
            except Exception as exc:  # noqa: BLE001 - a missed beat is logged; redelivery copes
                log.warning("heartbeat_failed", error=repr(exc))

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class AgentService:
    """Runs the sub-tasks of one role; constructed ready, with every connection it needs."""

    def __init__(
        self,
        settings: Settings,
        runtime: RoleRuntime,
        bus: AgentBus,
        clock: Clock | None = None,
    ) -> None:
        """Serve `runtime`'s role through `bus`."""
        self.settings = settings
        self.runtime = runtime
        self.role = runtime.role
        self.bus = bus
        self.clock = clock or SystemClock()
        self.breaker_events = BreakerEvents(bus.publisher)
        # One registry per process: a model or tool failing for one run is failing for all.
        self.breakers = BreakerRegistry(
            runtime.role_config.breaker, self.clock, self.breaker_events.changed
        )

    async def _is_cancelled(self, task_id: str) -> bool:
        try:
            await self.bus.tasks.get(subjects.cancel_key(task_id))
        except KeyNotFoundError:
            return False
        except Exception as exc:  # noqa: BLE001 - unknown: keep working, ask again next step
            log.warning("cancel_check_failed", error=repr(exc))
            return False
        return True

    async def work(self, assignment: SubTaskAssigned, msg: NatsMessage) -> None:
        """Run the assignment with heartbeats; publish its terminal event, or its requests."""
        try:
            async with heartbeat(msg, self.settings.heartbeat_s):
                with picked_up(assignment, msg):
                    try:
                        ended = await self.execute(assignment)
                    except PayloadTooLargeError as exc:  # the run's own state cannot be kept
                        log.exception("checkpoint_unstorable")
                        ended = self._unstorable(assignment, exc)
                    if isinstance(ended, RunPaused):
                        await self._publish_requests(ended)
                    else:
                        await self._publish_finished(ended)
        except RunFencedError:
            log.warning("run_fenced", delivery=msg.raw_message.metadata.num_delivered)
            raise  # the Settler leaves the message to the worker that holds the run now

    def _unstorable(
        self, assignment: SubTaskAssigned, error: PayloadTooLargeError
    ) -> SubTaskFinished:
        """The run ends `failed` once: its checkpoint cannot be stored, so it cannot go on.

        Its message id is the attempt's terminal one, so a redelivery that ends the same way
        publishes the same event, stored once.
        """
        return SubTaskFinished(
            task_id=assignment.task_id,
            subtask_id=assignment.subtask_id,
            attempt=assignment.attempt,
            run_id="-",
            role=self.role,
            status=SubTaskStatus.FAILED,
            reason=f"the run's checkpoint could not be stored, so it cannot go on: {error}",
            usage=Usage(),
            subtask_kind=assignment.subtask_kind,
        )

    async def _publish_finished(self, finished: SubTaskFinished) -> None:
        """Publish the decided terminal event, or, if it cannot travel at all, its failure.

        The failure is derived from the decision alone (same event id), so a redelivery that
        republishes the decision publishes the same failure, stored once.
        """
        try:
            await self.bus.publisher.publish(finished)
        except PayloadTooLargeError as exc:
            error = exc
        else:
            return
        log.error("terminal_event_unstorable", status=finished.status.value, error=str(error))
        await self.bus.publisher.publish(unpublishable(finished, error))

    async def _publish_requests(self, paused: RunPaused) -> None:
        """Publish every request the paused run waits for (each id is one message on EVENTS)."""
        log.info("run_paused", approvals=[r.approval_id for r in paused.requests])
        for request in paused.requests:
            await self.bus.publisher.publish(request)

    async def execute(self, assignment: SubTaskAssigned) -> SubTaskFinished | RunPaused:
        """Run (or resume) one assignment to its terminal event, or to a pause for people.

        A run found paused takes the assignment's resolutions; while any approval of the pause
        is left without one, it stays paused (its requests are returned to publish again).

        Raises:
            RunFencedError: another worker took the run over; report nothing.
            CheckpointUnavailableError: the bus is down; retry the delivery later.
        """
        kind = assignment.subtask_kind or ""
        with serving(assignment.task_id, assignment.subtask_id, assignment.role, kind):
            key = subjects.checkpoint_key(
                assignment.task_id, assignment.subtask_id, assignment.attempt
            )
            handle = await self.bus.checkpoints.open(key)
            state = handle.state
            if state is not None and state.finished is not None:
                return state.finished  # decided before a crash: publish it again
            if state is not None and state.phase is RunPhase.AWAITING_APPROVAL:
                still = attach(state, assignment.resume)
                if still:  # nothing to resume yet: ask again, and ack
                    bind_ids(
                        task_id=assignment.task_id,
                        subtask_id=assignment.subtask_id,
                        run_id=state.run_id,
                    )
                    return RunPaused(still)
            return await self._run(assignment, handle)

    async def _run(
        self, assignment: SubTaskAssigned, handle: RunCheckpointHandle
    ) -> SubTaskFinished | RunPaused:
        state = handle.state or new_run(await self._with_dependencies(assignment))
        bind_ids(task_id=assignment.task_id, subtask_id=assignment.subtask_id, run_id=state.run_id)
        if handle.state is not None:
            log.info("run_resumed", steps_done=state.usage.steps)
        models, problems = self.runtime.models(assignment)
        chain = self.runtime.chain(assignment)
        with run_span(assignment, state, chain) as run:
            save = run.saving(handle.save)
            started = SubTaskStarted(
                task_id=assignment.task_id,
                subtask_id=assignment.subtask_id,
                attempt=assignment.attempt,
                run_id=state.run_id,
                role=self.role,
                model=" > ".join(chain),
                resumed=assignment.resume[-1].approval_id if assignment.resume else None,
            )
            # The first step's cancel check goes out with the start: one round trip fewer.
            _, cancelled = await together(
                self.bus.publisher.publish(started), self._is_cancelled(assignment.task_id)
            )
            if not models:
                outcome = RunOutcome(
                    SubTaskStatus.FAILED, "no usable model: " + "; ".join(problems), None, Usage()
                )
                finished = self._finished(assignment, state, outcome)
                state.phase = RunPhase.FINISHED
                state.finished = finished
                await save(state)
                run.finished(finished)
                return finished
            context = self._context(assignment, models, save, cancelled=cancelled is True)
            loop = AgentLoop(assignment, context, state)
            try:
                outcome = await loop.run()
            except RunPaused as paused:
                run.paused(paused)
                return paused
            log.info("run_finished", status=outcome.status.value, reason=outcome.reason)
            finished = self._finished(assignment, state, outcome)
            await loop.decide(finished)
            run.finished(finished)
            return finished

    async def _with_dependencies(self, assignment: SubTaskAssigned) -> SubTaskAssigned:
        """The assignment with its dependency outputs passed by reference read whole."""
        outputs: dict[str, object] = {}
        for dep in assignment.dependencies:
            if dep.output_ref is None or self.bus.artifacts is None:
                continue
            try:
                outputs[dep.subtask_id] = await self.bus.artifacts.get_json(dep.output_ref)
            except ArtifactNotFoundError as exc:
                log.warning("dependency_output_missing", dependency=dep.subtask_id, error=str(exc))
        return inline_outputs(assignment, outputs)

    def _context(
        self,
        assignment: SubTaskAssigned,
        models: list[Model],
        save: Callable[[RunCheckpoint], Awaitable[None]],
        *,
        cancelled: bool,
    ) -> RunContext:
        """What the run's loop works with; `cancelled` answers its first cancel check."""
        first_check = [cancelled]

        async def is_cancelled() -> bool:
            if first_check:
                return first_check.pop()
            return await self._is_cancelled(assignment.task_id)

        role, config = self.runtime.role_config, self.runtime.config
        budget = BudgetGate(
            self.bus.ledger,
            assignment.task_id,
            assignment.budget,
            holder=f"{assignment.subtask_id}:{assignment.attempt}",
        )
        knowledge = self.bus.knowledge
        return RunContext(
            system=role.system,
            caller=ModelCaller(
                models,
                breakers=self.breakers,
                retry=role.retry,
                price_for=config.price_for,
                budget=budget,
                events=self.bus.publisher,
            ),
            tools=ToolRunner(self.runtime.toolbox, breakers=self.breakers, retry=role.retry),
            workspace=config.workspace_dir(),
            clock=self.clock,
            events=self.bus.publisher,
            validators=self.runtime.validators,
            output_retries=role.output_retries,
            tool_options=config.tool_options,
            tool_clients={"knowledge": knowledge} if knowledge is not None else {},
            checkpoint=save,
            cancelled=is_cancelled,
            approvals=self.runtime.approvals,
        )

    def _finished(
        self, assignment: SubTaskAssigned, state: RunCheckpoint, outcome: RunOutcome
    ) -> SubTaskFinished:
        return SubTaskFinished(
            task_id=assignment.task_id,
            subtask_id=assignment.subtask_id,
            attempt=assignment.attempt,
            run_id=state.run_id,
            role=self.role,
            status=outcome.status,
            reason=outcome.reason,
            output=outcome.output,
            usage=outcome.usage,
            limit=outcome.limit,
            flags=outcome.flags,
            subtask_kind=assignment.subtask_kind,
            model=state.model,
        )


def unpublishable(finished: SubTaskFinished, error: PayloadTooLargeError) -> SubTaskFinished:
    """The terminal event of a run whose own terminal event cannot be published or stored."""
    return finished.model_copy(
        update={
            "status": SubTaskStatus.FAILED,
            "reason": f"the run ended {finished.status.value} ({finished.reason[:500]}), but "
            f"its terminal event could not be published: {error}",
            "output": None,
            "output_ref": None,
        }
    )
