"""How an agent process starts: its broker, its work subscriber, its service built ready.

build_agent_broker(...)   only the broker and its work subscriber (AsyncAPI needs no server)
start_agent(...)          build the broker, connect, build the service ready, start
"""

from __future__ import annotations

from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage

from hivebus.agent.checkpoint import CheckpointStore, LargeCheckpoints
from hivebus.agent.replay import Replay
from hivebus.agent.role import RoleRuntime, role_config
from hivebus.agent.service import SERVICE_CONTEXT_KEY, AgentBus, AgentService
from hivebus.contracts import SubTaskAssigned, subjects
from hivebus.core import (
    Clock,
    HivebusConfig,
    Publisher,
    Settings,
    Settler,
    jetstream,
    new_broker,
)
from hivebus.core.artifacts import Artifacts
from hivebus.core.budget import BudgetLedger, GroupedLedgerStore, KvLedgerStore
from hivebus.core.bus import pull_inbox
from hivebus.core.knowledge_client import KnowledgeClient


class WorkHandler:
    """The work subscriber's function; it finds the ready service and its message in the broker.

    It takes only the message body: FastStream resolves `Context()` arguments per message in a
    worker thread, so the service and the message are read from the broker's context instead.
    """

    def __init__(self, broker: NatsBroker) -> None:
        """Serve the work subscriber of `broker`."""
        self.broker = broker

    async def handle_work(self, assignment: SubTaskAssigned) -> None:
        """Handler edge: run the assignment, publish its terminal event, settle by the Settler.

        An assignment that fails validation never gets here: the broker's middleware
        terminates it (see `hivebus.core.settle`).
        """
        service: AgentService = self.broker.context.get(SERVICE_CONTEXT_KEY)
        msg: NatsMessage = self.broker.context.get_local("message")
        await service.bus.settler.run(msg, service.work(assignment, msg))


def build_agent_broker(
    settings: Settings, config: HivebusConfig, role: str, url: str
) -> NatsBroker:
    """A FastStream broker with the role's work subscriber; needs no server until started."""
    broker = new_broker(url, f"agent-{role}", settings)
    subscriber = broker.subscriber(
        subjects.work(role),
        stream=JStream(subjects.WORK_STREAM, declare=False),
        durable=subjects.agent_consumer(role),
        pull_sub=PullSub(batch_size=1, timeout=1.0),
        inbox_prefix=pull_inbox(settings),
        max_workers=role_config(config, role).concurrency,
        ack_policy=AckPolicy.MANUAL,
        title=f"work.{role}",
        description=(
            f"SubTaskAssigned for role {role!r}; "
            "answered by SubTaskStarted, StepRecorded and SubTaskFinished on EVENTS."
        ),
    )
    subscriber(WorkHandler(broker).handle_work)
    return broker


async def start_agent(
    settings: Settings,
    config: HivebusConfig,
    role: str,
    url: str,
    clock: Clock | None = None,
    *,
    replay: Replay | None = None,
) -> NatsBroker:
    """Start one role's agent (topology must exist); returns the running broker to stop later.

    The role's tools and validators load before anything connects, so a bad configuration
    fails at once. `replay` (a golden run) stands in for the role's models and maybe its tools.
    """
    runtime = RoleRuntime(settings, config, role, replay)
    broker = build_agent_broker(settings, config, role, url)
    try:
        js = await jetstream(broker)  # connects
        artifacts = Artifacts(js)
        publisher = Publisher(broker, settings.publish_timeout_s, artifacts=artifacts)
        tasks = await js.key_value(subjects.TASKS_BUCKET)
        bus = AgentBus(
            publisher=publisher,
            settler=Settler(publisher, settings.nak_delay_s),
            tasks=tasks,
            checkpoints=CheckpointStore(
                await js.key_value(subjects.RUNS_BUCKET),
                LargeCheckpoints(artifacts, await publisher.payload_budget()),
            ),
            ledger=BudgetLedger(GroupedLedgerStore(KvLedgerStore(tasks, settings.kv_cas_attempts))),
            knowledge=KnowledgeClient(
                broker, await js.key_value(subjects.KNOWLEDGE_BUCKET), publisher
            ),
            artifacts=artifacts,
        )
        broker.context.set_global(SERVICE_CONTEXT_KEY, AgentService(settings, runtime, bus, clock))
        await broker.start()
    except BaseException:
        await broker.stop()
        raise
    return broker
