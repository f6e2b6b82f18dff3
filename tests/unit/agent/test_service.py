"""The agent service on a real nats-server: started ready, settled only by the Settler, fenced.

Each test gets its own server (the `nats_server` fixture) with the topology provisioned, and
waits for what it checks to become visible on the bus, bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import textwrap
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from faststream.nats import NatsBroker
from faststream.specification import AsyncAPI
from hivetest import write_script
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from structlog.testing import capture_logs

from hivebus.agent.checkpoint import CheckpointStore, CheckpointUnavailableError, RunFencedError
from hivebus.agent.errors import AgentError
from hivebus.agent.role import RoleRuntime
from hivebus.agent.startup import build_agent_broker, start_agent
from hivebus.contracts import (
    EVENTS_BY_KIND,
    BreakerChanged,
    Event,
    Limits,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskStatus,
    Usage,
    subjects,
)
from hivebus.contracts.runs import RunCheckpoint, RunPhase
from hivebus.core import (
    HivebusConfig,
    Publisher,
    Settings,
    SupersededError,
    jetstream,
    new_broker,
    parse_config,
)
from hivebus.core.topology import provision

ROLE = "writer"
E = TypeVar("E", bound=Event)
WAIT_S = 20.0
"""Bound on every wait for something to show up on the bus."""


async def wait_until(check: Callable[[], Any], what: str) -> Any:
    """Poll `check` (sync or async) until it gives something truthy; fail after `WAIT_S`."""
    try:
        async with asyncio.timeout(WAIT_S):
            while True:
                found = check()
                if inspect.isawaitable(found):
                    found = await found
                if found:
                    return found
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


class Client:
    """A client of the test's server: provisions, publishes work, collects every event."""

    def __init__(self, settings: Settings) -> None:
        """Use the server `settings` name."""
        assert settings.nats_url is not None
        self.settings = settings
        self.broker = new_broker(settings.nats_url, "test-client", settings)
        self.events: list[Event] = []
        self.js: JetStreamContext | None = None

    async def start(self) -> None:
        """Connect, provision the role's topology, and collect EVENTS."""
        self.js = await jetstream(self.broker)
        await provision(self.js, self.settings, [ROLE])
        connection = await self.broker.connect()
        await connection.subscribe(subjects.EVENTS_ALL, cb=self._collect)

    async def _collect(self, msg: Msg) -> None:
        data = json.loads(msg.data)
        self.events.append(EVENTS_BY_KIND[data["kind"]].model_validate(data))

    async def assign(self, assignment: SubTaskAssigned) -> None:
        """Dispatch work as the orchestrator does."""
        await Publisher(self.broker, self.settings.publish_timeout_s).publish(assignment)

    def of_type(self, kind: type[E]) -> list[E]:
        """The events of one type seen so far."""
        return [event for event in self.events if isinstance(event, kind)]

    async def runs(self) -> CheckpointStore:
        """The checkpoint store of the server's `runs` bucket."""
        assert self.js is not None
        return CheckpointStore(await self.js.key_value(subjects.RUNS_BUCKET))

    async def pending_acks(self) -> int:
        """Work messages of the role delivered and not acknowledged."""
        assert self.js is not None
        info = await self.js.consumer_info(subjects.WORK_STREAM, subjects.agent_consumer(ROLE))
        return info.num_ack_pending

    async def all_acked(self) -> bool:
        """Whether every work message of the role was delivered and acknowledged."""
        assert self.js is not None
        info = await self.js.consumer_info(subjects.WORK_STREAM, subjects.agent_consumer(ROLE))
        return info.num_pending == 0 and info.num_ack_pending == 0 and info.delivered.stream_seq > 0


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    """A connected client of the test's provisioned server."""
    bus = Client(settings)
    await bus.start()
    try:
        yield bus
    finally:
        await bus.broker.stop()


@pytest.fixture
async def agents() -> AsyncIterator[list[NatsBroker]]:
    """Agent brokers a test starts, stopped at its end."""
    started: list[NatsBroker] = []
    try:
        yield started
    finally:
        for broker in started:
            await broker.stop()


def config_with(
    directory: Path, model: str | list[str], python_paths: list[str] | None = None, **role: Any
) -> HivebusConfig:
    """A configuration in `directory` whose `writer` role uses `model` (and `role` settings)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = {
        "workspace": "workspace",
        "python_paths": python_paths or [],
        "roles": {ROLE: {"system": "You write.", "model": model, **role}},
    }
    return parse_config(data, directory)


def answering(directory: Path, *turns: dict[str, Any]) -> str:
    """The route of a script in `directory` playing `turns`."""
    directory.mkdir(parents=True, exist_ok=True)
    return write_script(directory, "writer.yaml", list(turns))


def assignment(task_id: str = "t-1", **extra: Any) -> SubTaskAssigned:
    """A sub-task for the `writer` role."""
    return SubTaskAssigned(
        task_id=task_id,
        subtask_id="s-1",
        role=ROLE,
        goal="Write.",
        prompt="Say hi.",
        limits=Limits(),
        **extra,
    )


# --- built without a server -------------------------------------------------------------------


def test_the_broker_is_built_without_a_server_for_asyncapi(tmp_path: Path) -> None:
    """`build_agent_broker` needs no server, and its AsyncAPI document names the work channel."""
    config = config_with(tmp_path, answering(tmp_path, {"text": "hi"}))
    broker = build_agent_broker(Settings(), config, ROLE, "nats://127.0.0.1:1")
    document = AsyncAPI(broker, title="hivebus agent").to_specification().to_json()
    assert f"work.{ROLE}" in document
    assert subjects.work(ROLE) in document
    assert "SubTaskAssigned" in document
    assert "hivebus_agent" not in document  # the service comes from the context, not the body


def test_an_unknown_role_fails_before_anything_connects(tmp_path: Path) -> None:
    """A role that is not in the configuration is an `AgentError` listing the known roles."""
    config = config_with(tmp_path, answering(tmp_path, {"text": "hi"}))
    with pytest.raises(AgentError, match=r"role 'editor' is not in the configuration; known: \["):
        build_agent_broker(Settings(), config, "editor", "nats://127.0.0.1:1")
    with pytest.raises(AgentError, match="known"):
        RoleRuntime(Settings(), config, "editor")


def test_the_tool_thread_bound_comes_from_settings(tmp_path: Path) -> None:
    """The role's toolbox refuses sync calls after `max_abandoned_tool_threads` stuck threads."""
    config = config_with(tmp_path, answering(tmp_path, {"text": "hi"}))
    runtime = RoleRuntime(Settings(max_abandoned_tool_threads=3), config, ROLE)
    assert runtime.toolbox.max_abandoned_threads == 3
    assert Settings().max_abandoned_tool_threads == 8


# --- checkpoints ------------------------------------------------------------------------------


async def test_opening_a_run_fences_its_previous_owner(client: Client) -> None:
    """A second `open` takes the run over: the first holder's next save is `RunFencedError`."""
    store = await client.runs()
    first = await store.open("t.s.1")
    assert first.state is None
    state = RunCheckpoint(run_id="r1")
    await first.save(state)

    second = await store.open("t.s.1")
    assert second.state is not None
    assert second.state.run_id == "r1"
    assert second.owner != first.owner
    with pytest.raises(RunFencedError) as fenced:
        await first.save(state)
    assert isinstance(fenced.value, SupersededError)  # the Settler leaves the message alone
    await second.save(second.state)  # the new owner goes on


async def test_a_finished_run_is_read_without_taking_it_over(client: Client) -> None:
    """Opening a run whose terminal event is decided writes nothing: its revision stays."""
    store = await client.runs()
    first = await store.open("t.s.1")
    finished = SubTaskFinished(
        task_id="t",
        subtask_id="s",
        attempt=1,
        run_id="r1",
        role=ROLE,
        status=SubTaskStatus.COMPLETED,
        reason="final answer given",
        usage=Usage(),
    )
    await first.save(RunCheckpoint(run_id="r1", phase=RunPhase.FINISHED, finished=finished))
    again = await store.open("t.s.1")
    assert again.state is not None
    assert again.state.finished == finished
    assert again.revision == first.revision


def test_checkpoint_errors_say_how_to_settle() -> None:
    """An unreachable checkpoint is retryable (nak); a fenced run is superseded (left alone)."""
    assert CheckpointUnavailableError.retryable is True
    assert issubclass(RunFencedError, SupersededError)


# --- running work -----------------------------------------------------------------------------


async def test_an_assignment_runs_to_its_terminal_event_and_is_acked(
    tmp_path: Path, settings: Settings, client: Client, agents: list[NatsBroker]
) -> None:
    """Work runs to `SubTaskFinished`, the checkpoint ends `finished`, and the message is acked."""
    assert settings.nats_url is not None
    config = config_with(tmp_path, answering(tmp_path, {"text": "hi there"}))
    agents.append(await start_agent(settings, config, ROLE, settings.nats_url))
    await client.assign(assignment())

    [finished] = await wait_until(lambda: client.of_type(SubTaskFinished), "SubTaskFinished")
    assert (finished.status, finished.output) == (SubTaskStatus.COMPLETED, "hi there")
    await wait_until(client.all_acked, "the work message to be acked")
    handle = await (await client.runs()).open(subjects.checkpoint_key("t-1", "s-1", 1))
    assert handle.state is not None
    assert handle.state.phase is RunPhase.FINISHED
    assert handle.state.finished == finished


async def test_a_task_cancelled_before_its_run_starts_calls_no_model(
    tmp_path: Path, settings: Settings, client: Client, agents: list[NatsBroker]
) -> None:
    """The first cancel check (sent with `SubTaskStarted`) sees the flag: no step is taken."""
    assert settings.nats_url is not None
    config = config_with(tmp_path, answering(tmp_path, {"text": "never said"}))
    assert client.js is not None
    tasks = await client.js.key_value(subjects.TASKS_BUCKET)
    await tasks.put(subjects.cancel_key("t-1"), b"1")
    agents.append(await start_agent(settings, config, ROLE, settings.nats_url))
    await client.assign(assignment())

    [finished] = await wait_until(lambda: client.of_type(SubTaskFinished), "SubTaskFinished")
    assert finished.status is SubTaskStatus.CANCELLED
    assert finished.usage.steps == 0
    assert len(client.of_type(SubTaskStarted)) == 1
    await wait_until(client.all_acked, "the work message to be acked")


async def test_a_plan_cannot_point_the_agent_at_a_file_outside_its_configuration(
    tmp_path: Path, settings: Settings, client: Client, agents: list[NatsBroker]
) -> None:
    """A plan's `scripted:` model outside the configuration directory fails the run unread."""
    assert settings.nats_url is not None
    config = config_with(tmp_path / "config", answering(tmp_path / "config", {"text": "hi"}))
    outside = write_script(tmp_path, "outside.yaml", [{"text": "read from outside"}])
    agents.append(await start_agent(settings, config, ROLE, settings.nats_url))
    await client.assign(assignment(model=outside))

    [finished] = await wait_until(lambda: client.of_type(SubTaskFinished), "SubTaskFinished")
    assert finished.status is SubTaskStatus.FAILED
    assert finished.reason.startswith("no usable model: ")
    assert "a plan may only name a scripted model by a relative path" in finished.reason


async def test_breaker_changes_are_published_for_the_run_that_caused_them(
    tmp_path: Path, settings: Settings, client: Client, agents: list[NatsBroker]
) -> None:
    """A breaker opened by a run's call is announced as `BreakerChanged` with the run's ids."""
    assert settings.nats_url is not None
    broken = write_script(tmp_path, "broken.yaml", [{"error": "server_error"}, {"then": "repeat"}])
    fallback = answering(tmp_path, {"text": "the fallback answered"})
    config = config_with(
        tmp_path,
        [broken, fallback],
        breaker={"failure_threshold": 1, "reset_after_s": 60},
        retry={"attempts": 1},
    )
    agents.append(await start_agent(settings, config, ROLE, settings.nats_url))
    await client.assign(assignment(task_id="t-9"))

    [finished] = await wait_until(lambda: client.of_type(SubTaskFinished), "SubTaskFinished")
    assert finished.output == "the fallback answered"
    [changed] = await wait_until(lambda: client.of_type(BreakerChanged), "BreakerChanged")
    assert (changed.task_id, changed.subtask_id) == ("t-9", "s-1")
    assert (changed.breaker, changed.old, changed.new) == (f"model:{broken}", "closed", "open")


FENCE_TOOLS = '''
"""A tool that holds its run until the test has taken the run over."""

import threading

from hivebus.agent import tool

entered = threading.Event()
release = threading.Event()


@tool(tier="read", timeout_s=30.0)
def hold() -> str:
    """Wait until released."""
    entered.set()
    release.wait(timeout=30)
    return "released"
'''


async def test_a_fenced_run_reports_nothing_and_leaves_its_message_unsettled(
    tmp_path: Path, settings: Settings, client: Client, agents: list[NatsBroker]
) -> None:
    """A run taken over mid-call stops at its next checkpoint: no terminal event, no ack, no nak."""
    assert settings.nats_url is not None
    (tmp_path / "fence_tools_for_test.py").write_text(textwrap.dedent(FENCE_TOOLS), "utf-8")
    config = config_with(
        tmp_path,
        answering(tmp_path, {"tool": "hold", "args": {}}, {"text": "never reached"}),
        python_paths=["."],
        tools=["fence_tools_for_test:hold"],
    )
    with capture_logs() as logs:
        agents.append(await start_agent(settings, config, ROLE, settings.nats_url))
        fence_tools = importlib.import_module("fence_tools_for_test")
        entered: threading.Event = fence_tools.entered
        await client.assign(assignment(task_id="t-5"))
        assert await asyncio.to_thread(entered.wait, WAIT_S), "the tool was never called"
        await (await client.runs()).open(subjects.checkpoint_key("t-5", "s-1", 1))  # take over
        fence_tools.release.set()
        await wait_until(
            lambda: any(line["event"] == "message_superseded" for line in logs),
            "the Settler to leave the fenced message",
        )

    assert [line["delivery"] for line in logs if line["event"] == "run_fenced"] == [1]
    assert not any(line["event"] == "message_retry" for line in logs)  # not nak'd
    assert client.of_type(SubTaskFinished) == []
    assert await client.pending_acks() == 1  # still held: the new owner settles it
