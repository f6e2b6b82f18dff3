"""The agent service: one durable pull consumer per role, shared by all its replicas.

Per message: decode the assignment, publish `SubTaskStarted`, run the bounded loop (with
`in_progress()` heartbeats), publish `SubTaskFinished`, then ack. Settlement is explicit:
an assignment that cannot be decoded is terminated; a failure to publish the result is a nak
with delay, so the sub-task is tried again (bounded by the consumer's `max_deliver`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from hivebus.agent.checkpoint import CheckpointStore, RunFencedError, RunState, new_owner
from hivebus.agent.errors import AgentError
from hivebus.agent.loop import AgentLoop, RunContext, RunOutcome, new_run_id
from hivebus.agent.modelcall import BudgetGate, ModelCaller
from hivebus.agent.models import Model, ModelFactory
from hivebus.agent.toolbox import Toolbox
from hivebus.agent.toolstep import ToolRunner
from hivebus.agent.validators import load_validator
from hivebus.contracts import (
    BreakerChanged,
    BudgetWarning,
    StepRecorded,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskStatus,
    Usage,
    subjects,
)
from hivebus.contracts.subjects import EventKind
from hivebus.core import (
    Clock,
    HivebusConfig,
    Settings,
    SystemClock,
    bind_ids,
    get_logger,
    jetstream,
    new_broker,
    publish_event,
)
from hivebus.core.budget import BudgetLedger, KvLedgerStore
from hivebus.core.knowledge_client import KnowledgeClient
from hivebus.core.reliability import BreakerRegistry

log = get_logger(__name__)

NAK_DELAY_S = 2.0


class EventPublisher:
    """Publishes a run's events to EVENTS, each with an idempotent message id."""

    def __init__(self, broker: NatsBroker, settings: Settings) -> None:
        """Publish through `broker`."""
        self.broker = broker
        self.settings = settings

    async def _publish(
        self, event: StepRecorded | SubTaskStarted | SubTaskFinished, kind: EventKind, key: str
    ) -> None:
        await publish_event(
            self.broker,
            event,
            subject=subjects.event(event.task_id, kind),
            stream=subjects.EVENTS_STREAM,
            msg_id=subjects.msg_id(event.task_id, event.subtask_id, event.attempt, key),
            settings=self.settings,
        )

    async def started(self, event: SubTaskStarted) -> None:
        """A run began."""
        await self._publish(event, EventKind.SUBTASK_STARTED, f"started-{event.run_id}")

    async def step(self, event: StepRecorded) -> None:
        """A step of a run."""
        await self._publish(event, EventKind.STEP, f"step-{event.run_id}-{event.step}")

    async def finished(self, event: SubTaskFinished) -> None:
        """The terminal event: one per attempt, whatever the run id."""
        await self._publish(event, EventKind.SUBTASK_FINISHED, "finished")

    async def budget_warning(self, event: BudgetWarning) -> None:
        """Once per task: the ledger lets exactly one settle cross the threshold."""
        await publish_event(
            self.broker,
            event,
            subject=subjects.event(event.task_id, EventKind.BUDGET_WARNING),
            stream=subjects.EVENTS_STREAM,
            msg_id=subjects.msg_id(event.task_id, "-", 0, "budget-warning"),
            settings=self.settings,
        )

    async def breaker_changed(self, event: BreakerChanged) -> None:
        """A breaker changed state while serving this task."""
        await publish_event(
            self.broker,
            event,
            subject=subjects.event(event.task_id, EventKind.BREAKER_CHANGED),
            stream=subjects.EVENTS_STREAM,
            msg_id=event.event_id,
            settings=self.settings,
        )


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
    """Runs the sub-tasks of one role."""

    def __init__(
        self,
        settings: Settings,
        config: HivebusConfig,
        role: str,
        broker: NatsBroker,
        clock: Clock | None = None,
    ) -> None:
        """Check the role and load its tools now, so a bad configuration fails at start."""
        if role not in config.roles:
            raise AgentError(
                f"role {role!r} is not in the configuration; known: {sorted(config.roles)}"
            )
        self.settings = settings
        self.config = config
        self.role = role
        self.role_config = config.roles[role]
        self.broker = broker
        self.clock = clock or SystemClock()
        for path in config.python_paths:
            resolved = str(config.resolve_path(path))
            if resolved not in sys.path:
                sys.path.insert(0, resolved)
        self.toolbox = Toolbox.from_refs(self.role_config.tools, self.role_config.tiers)
        self.validators = [load_validator(ref) for ref in self.role_config.validators]
        self.models = ModelFactory(settings, config)
        self.events = EventPublisher(broker, settings)
        # One registry per process: a model or tool failing for one run is failing for all.
        self.breakers = BreakerRegistry(self.role_config.breaker, self.clock)
        self.ledger: BudgetLedger | None = None
        self.tasks_kv: KeyValue | None = None
        self.checkpoints: CheckpointStore | None = None
        self.knowledge: KnowledgeClient | None = None

    async def prepare(self) -> None:
        """Bind the task-budget ledger, task state and checkpoints in KV (before `start()`)."""
        js = await jetstream(self.broker)
        self.tasks_kv = await js.key_value(subjects.TASKS_BUCKET)
        self.ledger = BudgetLedger(KvLedgerStore(self.tasks_kv, self.settings.kv_cas_attempts))
        self.checkpoints = CheckpointStore(await js.key_value(subjects.RUNS_BUCKET))
        self.knowledge = KnowledgeClient(self.broker, await js.key_value(subjects.KNOWLEDGE_BUCKET))

    async def _is_cancelled(self, task_id: str) -> bool:
        if self.tasks_kv is None:
            return False
        try:
            await self.tasks_kv.get(subjects.cancel_key(task_id))
        except KeyNotFoundError:
            return False
        except Exception as exc:  # noqa: BLE001 - unknown: keep working, ask again next step
            log.warning("cancel_check_failed", error=repr(exc))
            return False
        return True

    def _models(self, chain: list[str]) -> tuple[list[Model], list[str]]:
        models: list[Model] = []
        problems: list[str] = []
        for route in chain:
            try:
                models.append(self.models.build(route))
            except AgentError as exc:
                problems.append(str(exc))
        return models, problems

    async def execute(self, assignment: SubTaskAssigned) -> SubTaskFinished:
        """Run (or resume) one assignment to its terminal event, checkpointing every step.

        Raises:
            RunFencedError: another worker took the run over; report nothing.
            CheckpointUnavailableError: the bus is down; retry the delivery later.
        """
        key = subjects.checkpoint_key(assignment.task_id, assignment.subtask_id, assignment.attempt)
        owner = new_owner()
        state, revision = (None, 0)
        if self.checkpoints is not None:
            state, revision = await self.checkpoints.load(key)
        if state is not None and state.finished is not None:
            return SubTaskFinished.model_validate(state.finished)  # decided before a crash
        run_id = state.run_id if state is not None else new_run_id()
        bind_ids(task_id=assignment.task_id, subtask_id=assignment.subtask_id, run_id=run_id)
        if (
            state is not None and self.checkpoints is not None
        ):  # take the run over: fences the old owner
            state.owner = owner
            revision = await self.checkpoints.save(key, state, revision)
            log.info("run_resumed", steps_done=state.usage.steps)

        async def checkpoint(snapshot: RunState) -> None:
            nonlocal revision
            if self.checkpoints is not None:
                snapshot.owner = owner
                revision = await self.checkpoints.save(key, snapshot, revision)

        chain = (
            [assignment.model]
            if assignment.model
            else self.role_config.model_chain(assignment.subtask_kind)
        )
        models, problems = self._models(chain)
        await self.events.started(
            SubTaskStarted(
                task_id=assignment.task_id,
                subtask_id=assignment.subtask_id,
                attempt=assignment.attempt,
                run_id=run_id,
                role=self.role,
                model=" > ".join(chain),
            )
        )
        if not models:
            outcome = RunOutcome(
                SubTaskStatus.FAILED, "no usable model: " + "; ".join(problems), None, Usage()
            )
            return await self._decide(assignment, run_id, outcome, None, checkpoint)
        budget = (
            BudgetGate(
                self.ledger,
                assignment.task_id,
                assignment.budget,
                holder=f"{assignment.subtask_id}:{assignment.attempt}",
            )
            if self.ledger is not None
            else None
        )
        context = RunContext(
            system=self.role_config.system,
            caller=ModelCaller(
                models,
                breakers=self.breakers,
                retry=self.role_config.retry,
                price_for=self.config.price_for,
                budget=budget,
            ),
            tools=ToolRunner(self.toolbox, breakers=self.breakers, retry=self.role_config.retry),
            workspace=self.config.workspace_dir(),
            clock=self.clock,
            events=self.events,
            run_id=run_id,
            validators=self.validators,
            output_retries=self.role_config.output_retries,
            tool_options=self.config.tool_options,
            tool_clients={"knowledge": self.knowledge} if self.knowledge else {},
            checkpoint=checkpoint,
            cancelled=lambda: self._is_cancelled(assignment.task_id),
        )
        loop = AgentLoop(assignment, context, resume=state)
        outcome = await loop.run()
        log.info("run_finished", status=outcome.status.value, reason=outcome.reason)
        return await self._decide(assignment, run_id, outcome, loop.snapshot(owner), checkpoint)

    async def _decide(
        self,
        assignment: SubTaskAssigned,
        run_id: str,
        outcome: RunOutcome,
        snapshot: RunState | None,
        checkpoint: Callable[[RunState], Awaitable[None]],
    ) -> SubTaskFinished:
        """Record the terminal event in the checkpoint before it is published."""
        finished = self._finished(assignment, run_id=run_id, outcome=outcome)
        state = snapshot or RunState(run_id=run_id, owner="", messages=[])
        state.finished = finished.model_dump(mode="json")
        await checkpoint(state)
        return finished

    def _finished(
        self, assignment: SubTaskAssigned, *, run_id: str, outcome: RunOutcome
    ) -> SubTaskFinished:
        return SubTaskFinished(
            task_id=assignment.task_id,
            subtask_id=assignment.subtask_id,
            attempt=assignment.attempt,
            run_id=run_id,
            role=self.role,
            status=outcome.status,
            reason=outcome.reason,
            output=outcome.output,
            usage=outcome.usage,
            limit=outcome.limit,
            flags=outcome.flags,
        )

    async def handle(self, assignment: SubTaskAssigned, msg: NatsMessage) -> None:
        """Handler edge: run with heartbeats, publish the terminal event, settle.

        An assignment that fails validation never gets here: the broker's middleware
        terminates it (see `hivebus.core.settle`).
        """
        try:
            async with heartbeat(msg, self.settings.heartbeat_s):
                finished = await self.execute(assignment)
                await self.events.finished(finished)
        except RunFencedError:
            # Another worker holds this run now; its delivery settles the message.
            log.warning("run_fenced", delivery=msg.raw_message.metadata.num_delivered)
            return
        except Exception as exc:
            log.exception("run_not_reported", error=repr(exc))
            await msg.nack(delay=NAK_DELAY_S)
            return
        await msg.ack()


def build_agent_broker(
    settings: Settings, config: HivebusConfig, role: str, url: str, clock: Clock | None = None
) -> tuple[NatsBroker, AgentService]:
    """A FastStream broker with the role's work subscriber; start it with `await broker.start()`."""
    broker = new_broker(url, f"agent-{role}")
    service = AgentService(settings, config, role, broker, clock)
    role_config = config.roles[role]
    subscriber = broker.subscriber(
        subjects.work(role),
        stream=JStream(subjects.WORK_STREAM, declare=False),
        durable=subjects.agent_consumer(role),
        pull_sub=PullSub(batch_size=1, timeout=1.0),
        max_workers=role_config.concurrency,
        ack_policy=AckPolicy.MANUAL,
        title=f"work.{role}",
        description=(
            f"SubTaskAssigned for role {role!r}; "
            "answered by SubTaskStarted, StepRecorded and SubTaskFinished on EVENTS."
        ),
    )
    subscriber(service.handle)
    return broker, service
