"""The knowledge service's group commit, on a real nats-server and a real Git repository."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from faststream.nats import NatsBroker
from hivetest import provision_bus
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from hivebus.contracts import subjects
from hivebus.contracts.knowledge import NoteWrite, NoteWriteResult
from hivebus.core import Publisher, Settings, jetstream, new_broker
from hivebus.knowledge.repo import GitRepo
from hivebus.knowledge.service import start_knowledge
from hivebus.knowledge.store import write_id_of

pytestmark = pytest.mark.e2e

WAIT_S = 30.0
"""Bound on every wait for the service."""


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


async def _stored(results: KeyValue, write_id: str) -> NoteWriteResult | None:
    try:
        entry = await results.get(subjects.knowledge_result_key(write_id))
    except KeyNotFoundError:
        return None
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


def _batches(root: Path) -> list[int]:
    """Commits per move of HEAD, newest first, from the reflog the service wrote."""
    done = subprocess.run(
        ["git", "reflog", "--format=%gs"],  # noqa: S607 - the git on PATH, fixed arguments
        cwd=root,
        capture_output=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(root)},
    )
    lines = done.stdout.decode().splitlines()
    return [int(line.split()[1]) for line in lines if line.startswith("hivebus: ")]


def _note(n: int, path: str = "shared/log.md") -> NoteWrite:
    return NoteWrite(task_id="t-batch", run_id=f"run{n}", role="writer", path=path, body=f"{n}")


async def test_writes_are_committed_in_stream_order_many_per_batch(
    tmp_path: Path, settings: Settings, bus: NatsBroker
) -> None:
    """Writes of one note, queued before the service starts, are committed in publish order.

    They are fetched and committed many per batch (one move of HEAD for several commits).
    """
    writes = [_note(n) for n in range(150)]
    publisher = Publisher(bus, 5.0)
    for write in writes:
        await publisher.publish(write)
    root = tmp_path / "kb"
    knowledge = await start_knowledge(settings, root, settings.nats_url or "")
    try:
        await _writer_idle(await jetstream(bus))
        results = await _results(bus)
        stored = [await _stored(results, w.write_id) for w in writes]
    finally:
        await knowledge.stop()
    assert all(r is not None and r.status == "committed" for r in stored)
    repo = GitRepo(root)
    history = [
        write_id_of(m.message) for m in reversed(repo.messages(len(writes) + 1)) if m.message
    ]
    assert history[1:] == [w.write_id for w in writes]  # after the first commit (the readme)
    assert (repo.show("shared/log.md") or "").endswith("149")
    batches = _batches(root)
    figures = f"commits per move of HEAD, newest first: {batches}"
    print(f"KNOWLEDGE batches: {figures}")  # noqa: T201 - the figures, for the closing note
    assert sum(batches) == len(writes) + 1
    assert max(batches) > 1
    assert repo.fsck()


async def test_a_write_that_cannot_be_committed_is_settled_alone(
    tmp_path: Path, settings: Settings, bus: NatsBroker
) -> None:
    """A write git refuses is terminated without a result; the writes around it are committed."""
    root = tmp_path / "kb"
    GitRepo(root).init()
    GitRepo(root).write_and_commit(  # a file where the folder of the bad write's note would be
        "shared/x", "a file\n", author_name="person", author_email="p@x", message="x"
    )
    good = [_note(n, f"shared/n{n}.md") for n in range(6)]
    bad = _note(99, "shared/x/blocked.md")
    writes = [*good[:3], bad, *good[3:]]
    publisher = Publisher(bus, 5.0)
    for write in writes:
        await publisher.publish(write)
    knowledge = await start_knowledge(settings, root, settings.nats_url or "")
    try:
        await _writer_idle(await jetstream(bus))
        results = await _results(bus)
        stored = {w.write_id: await _stored(results, w.write_id) for w in writes}
    finally:
        await knowledge.stop()
    assert stored[bad.write_id] is None
    assert all((r := stored[w.write_id]) is not None and r.status == "committed" for w in good)
    repo = GitRepo(root)
    assert repo.list_files("shared") == [*(w.path for w in good), "shared/x"]
    assert repo.fsck()
