"""The knowledge service SIGKILLed mid-stream and restarted: no accepted write lost."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest
from hivetest import HIVEBUS, process_env, provision_bus
from nats.js.errors import KeyNotFoundError
from process_fleet import read_events

from hivebus.contracts import subjects
from hivebus.contracts.knowledge import NoteWrite
from hivebus.core import EmbeddedNats, Publisher, Settings, jetstream, new_broker
from hivebus.knowledge.repo import GitRepo

pytestmark = pytest.mark.chaos

WRITES = 120
KILLS = 2


def _serve(settings: Settings, repo: Path, log: Path) -> subprocess.Popen[bytes]:
    env = process_env(
        HIVEBUS_NATS_URL=settings.nats_url or "",
        HIVEBUS_KNOWLEDGE_DIR=str(repo),
        HIVEBUS_ORCHESTRATOR_ACK_WAIT_S=str(settings.orchestrator_ack_wait_s),
        HIVEBUS_CONFIG_FILE=str(Path(__file__).resolve().parents[2] / "hivebus.yaml"),
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(HIVEBUS), "serve", "knowledge"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def test_knowledge_service_killed_mid_stream_loses_no_accepted_write(
    tmp_path: Path, nats_server: EmbeddedNats, settings: Settings
) -> None:
    """Every write the stream accepted becomes exactly one commit across SIGKILLs; fsck is clean.

    Every commit is announced too: a kill between a commit and its `NoteCommitted` is made up
    for when the write is delivered again.
    """
    url = nats_server.url
    await provision_bus(url, settings)
    repo_dir = tmp_path / "kb"
    broker = new_broker(url, "kb-chaos", settings)
    await broker.start()
    service = _serve(settings, repo_dir, tmp_path / "kb.log")
    kills = 0
    try:
        kv = await (await jetstream(broker)).key_value(subjects.KNOWLEDGE_BUCKET)
        writes = [
            NoteWrite(task_id="t-chaos", role="writer", path=f"tasks/t-chaos/n-{i}.md", body=f"{i}")
            for i in range(WRITES)
        ]
        publisher = Publisher(broker, timeout_s=5.0)
        for write in writes:  # every publish is acked by JetStream: accepted
            await publisher.publish(write)

        async def done() -> int:
            count = 0
            for write in writes:
                try:
                    await kv.get(subjects.knowledge_result_key(write.write_id))
                except KeyNotFoundError:
                    continue
                count += 1
            return count

        async with asyncio.timeout(90):
            while kills < KILLS:
                applied = await done()
                if applied >= (kills + 1) * WRITES // (KILLS + 2):
                    os.killpg(service.pid, signal.SIGKILL)
                    service.wait()
                    kills += 1
                    service = _serve(settings, repo_dir, tmp_path / "kb.log")
                await asyncio.sleep(0.2)
            while (applied := await done()) < WRITES:  # noqa: ASYNC110 - polling KV
                await asyncio.sleep(0.2)
        events = await read_events(await jetstream(broker), "t-chaos")
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        service.wait(timeout=20)
        await broker.stop()
    repo = GitRepo(repo_dir)
    paths = repo.list_files("tasks/t-chaos")
    commits = len(repo.log(limit=1000)) - 1
    lost = WRITES - len(paths)
    announced = {body["write_id"] for kind, body in events if kind == "note_committed"}
    print(  # noqa: T201 - the figures, for the closing note
        f"CHAOS knowledge-kill: writes={WRITES} kills={kills} commits={commits} lost={lost} "
        f"announced={len(announced)} fsck={'clean' if repo.fsck() else 'BROKEN'}"
    )
    assert kills == KILLS
    assert lost == 0
    assert commits == WRITES
    assert announced == {write.write_id for write in writes}
    assert repo.fsck()
    assert not (repo_dir / ".git" / "index.lock").exists()
