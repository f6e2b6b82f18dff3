"""The knowledge service on a real nats-server and a real Git repository."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from nats.js.api import DeliverPolicy

from hivebus.console.stack import provision_all
from hivebus.contracts import subjects
from hivebus.contracts.knowledge import NoteWrite, NoteWriteResult
from hivebus.core import Settings, jetstream, new_broker
from hivebus.core.knowledge_client import KnowledgeClient
from hivebus.knowledge.repo import GitRepo
from hivebus.knowledge.service import build_knowledge_broker

pytestmark = pytest.mark.e2e

AGENTS = 8
WRITES_EACH = 25
SHARED_NOTES = ["shared/plan.md", "shared/risks.md"]


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


async def test_eight_agents_writing_concurrently_lose_nothing(
    tmp_path: Path, settings: Settings
) -> None:
    """8 agents x 25 writes: each accepted write is one commit, conflicts are reported.

    The repository stays consistent (git fsck) and no lock file is left.
    """
    url = settings.nats_url or ""
    await provision_all(url, settings, [])
    broker, service = build_knowledge_broker(settings, tmp_path / "kb", url)
    await service.prepare()
    await broker.start()
    client_broker = new_broker(url, "test-agents")
    try:
        await client_broker.start()
        kv = await (await jetstream(client_broker)).key_value(subjects.KNOWLEDGE_BUCKET)
        client = KnowledgeClient(client_broker, kv)
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
        await client_broker.stop()
        await broker.stop()


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
        note = (stack.knowledge_root() / "tasks" / "sum-task" / "summary.md").read_text()
    assert committed.path == "tasks/sum-task/summary.md"
    assert committed.author == "orchestrator"
    assert "**Status:** completed" in note
    assert "forty-two" in note
