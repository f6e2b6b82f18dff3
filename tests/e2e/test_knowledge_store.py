"""The knowledge service on a real nats-server and a real Git repository."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from faststream.nats import NatsBroker
from hivetest import provision_bus
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from hivebus.contracts import NoteCommitted, subjects
from hivebus.contracts.knowledge import NoteWrite, NoteWriteResult
from hivebus.core import EventSink, Publisher, Settings, jetstream, new_broker
from hivebus.core.knowledge_client import KnowledgeClient
from hivebus.knowledge.repo import GitRepo
from hivebus.knowledge.service import SERVICE_CONTEXT, KnowledgeService, start_knowledge
from hivebus.knowledge.store import KnowledgeStore

pytestmark = pytest.mark.e2e

AGENTS = 8
WRITES_EACH = 25
SHARED_NOTES = ["shared/plan.md", "shared/risks.md"]
WAIT_S = 15.0
"""Bound on every wait for the service in the recovery tests."""


async def _agent(client: KnowledgeClient, agent: int, rng: random.Random) -> list[NoteWriteResult]:
    """One agent: its own notes, and read-modify-write on the shared ones."""
    results = []
    for n in range(WRITES_EACH):
        if n % 3 == 0:
            path = rng.choice(SHARED_NOTES)
            read = await client.read(path)
            body = f"{read.content or ''}\nagent {agent} write {n}"[-2000:]
            expected = read.revision or "new"
        else:
            path, body, expected = f"tasks/t-kb/agent-{agent}-{n % 5}.md", f"note {n}", None
        write = NoteWrite(
            task_id="t-kb",
            subtask_id=f"a{agent}",
            run_id=f"run{agent}",
            role="researcher",
            path=path,
            body=body,
            expected_revision=expected,
        )
        results.append(await client.write(write))
    return results


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[NatsBroker]:
    """A provisioned server and a connected client broker (the test's own, not the service's)."""
    url = settings.nats_url or ""
    await provision_bus(url, settings)
    broker = new_broker(url, "test-client", settings)
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


async def _results(broker: NatsBroker) -> KeyValue:
    return await (await jetstream(broker)).key_value(subjects.KNOWLEDGE_BUCKET)


async def _stored_result(results: KeyValue, write_id: str) -> NoteWriteResult:
    """The stored result of a write, waited for (bounded by `WAIT_S`)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            try:
                entry = await results.get(subjects.knowledge_result_key(write_id))
            except KeyNotFoundError:
                await asyncio.sleep(0.05)
                continue
            return NoteWriteResult.model_validate_json(entry.value or b"{}")


async def _writer_idle(js: JetStreamContext) -> None:
    """Wait until the writer's consumer holds no write, pending or unacknowledged."""
    async with asyncio.timeout(WAIT_S):
        while True:
            info = await js.consumer_info(
                subjects.KNOWLEDGE_STREAM, subjects.KNOWLEDGE_WRITER_CONSUMER
            )
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
            await asyncio.sleep(0.05)


async def _announcements(js: JetStreamContext, task_id: str) -> list[NoteCommitted]:
    """Every `note_committed` event of a task stored in EVENTS so far, oldest first."""
    subject = subjects.event(task_id, subjects.EventKind.NOTE_COMMITTED)
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    events: list[NoteCommitted] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=WAIT_S if not events else 1.0)
            except NatsTimeoutError:
                return events
            events.append(NoteCommitted.model_validate_json(msg.data))
            if msg.metadata.num_pending == 0:
                return events
    finally:
        await sub.unsubscribe()


async def _first_announcement(js: JetStreamContext, task_id: str) -> NoteCommitted:
    """The first `note_committed` event of a task, waited for (bounded by `WAIT_S`)."""
    subject = subjects.event(task_id, subjects.EventKind.NOTE_COMMITTED)
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        msg = await sub.next_msg(timeout=WAIT_S)
    finally:
        await sub.unsubscribe()
    return NoteCommitted.model_validate_json(msg.data)


def _note(task_id: str, body: str = "Bees love clover.") -> NoteWrite:
    return NoteWrite(
        task_id=task_id,
        subtask_id="s1",
        run_id="run1",
        role="researcher",
        path=f"tasks/{task_id}/bees.md",
        body=body,
    )


async def test_eight_agents_writing_concurrently_lose_nothing(
    tmp_path: Path, settings: Settings, bus: NatsBroker
) -> None:
    """8 agents x 25 writes: each accepted write is one commit, conflicts are reported.

    The repository stays consistent (git fsck) and no lock file is left.
    """
    knowledge = await start_knowledge(settings, tmp_path / "kb", settings.nats_url or "")
    try:
        client = KnowledgeClient(bus, await _results(bus), Publisher(bus, 5.0))
        rng = random.Random(7)
        async with asyncio.timeout(120):
            per_agent = await asyncio.gather(
                *(_agent(client, agent, random.Random(rng.random())) for agent in range(AGENTS))
            )
        results = [r for rs in per_agent for r in rs]
        repo = GitRepo(tmp_path / "kb")
        commits = len(repo.log(limit=1000)) - 1  # minus the initial README commit
        committed = sum(r.status == "committed" for r in results)
        conflicts = sum(r.status == "conflict" for r in results)
        print(  # noqa: T201 - the figures of the concurrency test, for the closing note
            f"KNOWLEDGE concurrency: agents={AGENTS} writes={len(results)} "
            f"committed={committed} conflicts={conflicts} commits={commits}"
        )
        assert len(results) == AGENTS * WRITES_EACH
        assert committed + conflicts + sum(r.status == "unchanged" for r in results) == len(results)
        assert commits == committed
        assert all(r.current_content is not None for r in results if r.status == "conflict")
        assert not (tmp_path / "kb" / ".git" / "index.lock").exists()
        assert repo.fsck()
        hits = await client.search("agent write")
        assert hits.hits
    finally:
        await knowledge.stop()


async def test_a_commit_made_before_a_crash_is_announced_on_redelivery(
    tmp_path: Path, settings: Settings, bus: NatsBroker
) -> None:
    """A write committed before a crash, then delivered again, is announced with its commit.

    As if the service died between the commit and the announcement; nothing is committed twice.
    """
    root = tmp_path / "kb"
    write = _note("t-crash")
    before_crash = await asyncio.to_thread(KnowledgeStore(root).apply, write)
    assert before_crash.status == "committed"
    knowledge = await start_knowledge(settings, root, settings.nats_url or "")
    try:
        js = await jetstream(bus)
        await Publisher(bus, 5.0).publish(write)  # the redelivery of the same write
        announced = await _first_announcement(js, "t-crash")
        result = await _stored_result(await _results(bus), write.write_id)
    finally:
        await knowledge.stop()
    assert (announced.write_id, announced.commit) == (write.write_id, before_crash.commit)
    assert announced.path == "tasks/t-crash/bees.md"
    assert (result.status, result.commit) == ("committed", before_crash.commit)
    assert len(GitRepo(root).log("tasks/t-crash/bees.md")) == 1


class LosesFirstAnnouncement:
    """A publisher whose first publish fails (as if the bus dropped it); then it passes."""

    def __init__(self, inner: EventSink) -> None:
        """Wrap the service's real publisher."""
        self.inner = inner
        self.attempts: list[BaseModel] = []

    async def publish(self, message: BaseModel) -> None:
        """Fail the first call with a retryable error, forward every later one."""
        self.attempts.append(message)
        if len(self.attempts) == 1:
            raise ConnectionError("injected: the first announcement never reached the bus")
        await self.inner.publish(message)


async def test_a_failed_announcement_is_retried_before_the_result_is_stored(
    tmp_path: Path, settings: Settings, bus: NatsBroker
) -> None:
    """A failed announcement is retried on redelivery: announced once, then the result stored.

    The note is committed once, and the failing publisher was called exactly twice.
    """
    fast = settings.model_copy(update={"nak_delay_s": 0.2})
    root = tmp_path / "kb"
    broker = await start_knowledge(fast, root, settings.nats_url or "")
    try:
        service = broker.context.get(SERVICE_CONTEXT)
        assert isinstance(service, KnowledgeService)
        flaky = LosesFirstAnnouncement(service.publisher)
        service.publisher = flaky
        write = _note("t-flaky")
        js = await jetstream(bus)
        await Publisher(bus, 5.0).publish(write)
        result = await _stored_result(await _results(bus), write.write_id)
        await _writer_idle(js)
        announced = await _announcements(js, "t-flaky")
    finally:
        await broker.stop()
    assert len(flaky.attempts) == 2
    assert result.status == "committed"
    assert [(a.write_id, a.commit) for a in announced] == [(write.write_id, result.commit)]
    assert len(GitRepo(root).log("tasks/t-flaky/bees.md")) == 1


async def test_agents_share_notes_through_the_tools(tmp_path: Path, settings: Settings) -> None:
    """An agent writes a note with kb_write, another finds and reads it; the commit is an event."""
    from hivetest import write_config, write_script  # noqa: PLC0415

    from hivebus.console.client import HiveClient  # noqa: PLC0415
    from hivebus.console.stack import LocalStack  # noqa: PLC0415
    from hivebus.contracts import NoteCommitted, TaskFinished  # noqa: PLC0415

    writer = write_script(
        tmp_path,
        "writer.yaml",
        [
            {"tool": "kb_write", "args": {"path": "shared/bees.md", "body": "Bees love clover."}},
            {"text": "wrote it"},
        ],
    )
    reader = write_script(
        tmp_path,
        "reader.yaml",
        [
            {"tool": "kb_search", "args": {"query": "clover"}},
            {"tool": "kb_read", "args": {"path": "shared/bees.md"}},
            {"text": "found it"},
        ],
    )
    tools = [
        "hivebus.agent.tools.knowledge:kb_write",
        "hivebus.agent.tools.knowledge:kb_read",
        "hivebus.agent.tools.knowledge:kb_search",
        "hivebus.agent.tools.knowledge:kb_list",
    ]
    config = write_config(
        tmp_path,
        {
            "writer": {
                "system": "s",
                "model": writer,
                "tools": tools,
                "tiers": ["read", "write_safe"],
            },
            "reader": {"system": "s", "model": reader, "tools": tools},
        },
    )
    plan = {
        "task_id": "kb-share",
        "goal": "share a note",
        "plan": {
            "subtasks": [
                {"id": "w", "role": "writer", "prompt": "write"},
                {"id": "r", "role": "reader", "prompt": "read", "depends_on": ["w"]},
            ]
        },
    }
    events = []
    async with (
        LocalStack(settings, config, data_dir=None) as stack,
        HiveClient(stack.url, settings) as client,
    ):
        await client.submit(plan)
        async with asyncio.timeout(30):
            async for _, event in client.follow("kb-share"):
                events.append(event)
        root = stack.knowledge_root()
        log = GitRepo(root).log("shared/bees.md")
    result = events[-1]
    assert isinstance(result, TaskFinished)
    assert result.status.value == "completed"
    committed = [e for e in events if isinstance(e, NoteCommitted)]
    assert [c.path for c in committed] == ["shared/bees.md"]
    assert committed[0].author.startswith("writer/")
    assert len(log) == 1
    assert log[0].subject.startswith("kb-share/w: write shared/bees.md")


async def test_a_finished_task_leaves_its_summary_in_its_folder(
    tmp_path: Path, settings: Settings
) -> None:
    """When a task finishes, the orchestrator's summary is committed under tasks/<task>/."""
    from hivetest import write_config, write_script  # noqa: PLC0415

    from hivebus.console.client import HiveClient  # noqa: PLC0415
    from hivebus.console.stack import LocalStack  # noqa: PLC0415
    from hivebus.contracts import NoteCommitted  # noqa: PLC0415

    model = write_script(tmp_path, "a.yaml", [{"text": "forty-two"}])
    config = write_config(tmp_path, {"solo": {"system": "s", "model": model}})
    plan = {
        "task_id": "Sum-Task",
        "goal": "answer",
        "plan": {"subtasks": [{"id": "only", "role": "solo", "prompt": "answer"}]},
    }
    async with LocalStack(settings, config) as stack, HiveClient(stack.url, settings) as client:
        await client.submit(plan)
        async with asyncio.timeout(30):
            async for _, _event in client.follow("Sum-Task"):
                pass
        committed: NoteCommitted | None = None
        sub = client.broker.subscriber(
            subjects.event("Sum-Task", subjects.EventKind.NOTE_COMMITTED),
            stream=subjects.EVENTS_STREAM,
            deliver_policy=DeliverPolicy.ALL,
            ordered_consumer=True,
            include_in_schema=False,
        )
        await sub.start()
        async with asyncio.timeout(15):
            while committed is None:
                message = await sub.get_one(timeout=1.0)
                if message is not None:
                    committed = NoteCommitted.model_validate_json(message.body)
        await sub.stop()
        note = (stack.knowledge_root() / "tasks/24/sum-task/summary.md").read_text()
    assert committed.path == "tasks/24/sum-task/summary.md"  # shard: sha256("sum-task")[:2]
    assert committed.author == "orchestrator"
    assert "**Status:** completed" in note
    assert "forty-two" in note
