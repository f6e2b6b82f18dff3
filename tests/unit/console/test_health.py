"""`hivebus health`: healthy only while the serving process is alive and rewriting its file."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from hivebus.console.health import STALE_S, check, heartbeat


def _beat(path: Path, pid: int, at: float) -> None:
    path.write_text(json.dumps({"service": "orchestrator", "pid": pid, "at": at}))


def test_a_fresh_beat_of_a_live_process_is_healthy(tmp_path: Path) -> None:
    """Written seconds ago by a process that runs: healthy, and it says who."""
    path = tmp_path / "health"
    _beat(path, os.getpid(), time.time() - 2)
    found = check(path)
    assert found.healthy
    assert "orchestrator" in found.why


def test_a_stale_beat_a_dead_process_or_no_file_is_unhealthy(tmp_path: Path) -> None:
    """Each reason is said: not come up, gone, or silent for too long."""
    path = tmp_path / "health"
    assert "not come up" in check(path).why
    _beat(path, os.getpid(), time.time() - STALE_S - 1)
    assert not check(path).healthy
    assert "ago" in check(path).why
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _beat(path, dead.pid, time.time())
    assert "gone" in check(path).why
    path.write_text("{not json")
    assert "cannot be read" in check(path).why


async def test_the_heartbeat_writes_only_while_the_probe_answers(tmp_path: Path) -> None:
    """A probe that fails writes nothing; leaving the block removes the file."""
    path = tmp_path / "health"
    answers = False

    async def probe() -> bool:
        return answers

    async with heartbeat(path, "agent", probe):
        await asyncio.sleep(0.1)
        assert not path.exists()
    answers = True
    async with heartbeat(path, "agent", probe):
        await asyncio.sleep(0.1)
        assert check(path).healthy
    assert not path.exists()
