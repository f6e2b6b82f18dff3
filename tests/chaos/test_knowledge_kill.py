"""The knowledge service SIGKILLed mid-stream and restarted: no accepted write lost."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest
from hivetest import HIVEBUS, process_env
from nats.js.errors import KeyNotFoundError

from hivebus.console.stack import provision_all
from hivebus.contracts import subjects
from hivebus.contracts.knowledge import NoteWrite
from hivebus.core import EmbeddedNats, Settings, jetstream, new_broker
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
    """Every write the stream accepted becomes exactly one commit across SIGKILLs; fsck is clean."""
    url = nats_server.url
    await provision_all(url, settings, [])
    repo_dir = tmp_path / "kb"
    broker = new_broker(url, "kb-chaos")
    await broker.start()
    service = _serve(settings, repo_dir, tmp_path / "kb.log")
    kills = 0
    try:
        kv = await (await jetstream(broker)).key_value(subjects.KNOWLEDGE_BUCKET)
        writes = [
            NoteWrite(task_id="t-chaos", role="writer", path=f"tasks/t-chaos/n-{i}.md", body=f"{i}")
            for i in range(WRITES)
        ]
        for write in writes:  # every publish is acked by JetStream: accepted
            await broker.publish(
                write,
                subjects.KNOWLEDGE_WRITE,
                headers={subjects.MSG_ID_HEADER: f"kb:{write.write_id}"},
                stream=subjects.KNOWLEDGE_STREAM,
                timeout=5.0,
            )

        async def done() -> int:
            count = 0
            for write in writes:
                try:
                    await kv.get(f"write.{write.write_id}")
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
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        service.wait(timeout=20)
        await broker.stop()
    repo = GitRepo(repo_dir)
    paths = repo.list_files("tasks/t-chaos")
    commits = len(repo.log(limit=1000)) - 1
    lost = WRITES - len(paths)
    print(  # noqa: T201 - the figures, for the closing note
        f"CHAOS knowledge-kill: writes={WRITES} kills={kills} commits={commits} lost={lost} "
        f"fsck={'clean' if repo.fsck() else 'BROKEN'}"
    )
    assert kills == KILLS
    assert lost == 0
    assert commits == WRITES
    assert repo.fsck()
    assert not (repo_dir / ".git" / "index.lock").exists()
