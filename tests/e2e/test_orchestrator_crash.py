"""The orchestrator process killed (SIGKILL) mid-task and restarted: the task still ends right."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from hivetest import HIVEBUS, process_env, write_config, write_script

from hivebus.console.client import HiveClient
from hivebus.console.stack import provision_all
from hivebus.contracts import (
    SubTaskFinished,
    SubTaskStarted,
    SubTaskStatus,
    TaskFinished,
    TaskStatus,
)
from hivebus.core import Settings

pytestmark = pytest.mark.e2e

E2E_DIR = Path(__file__).resolve().parent


def _spawn(config: Path, settings: Settings, *service: str) -> subprocess.Popen[bytes]:
    env = process_env(
        HIVEBUS_NATS_URL=settings.nats_url or "",
        HIVEBUS_ORCHESTRATOR_ACK_WAIT_S=str(settings.orchestrator_ack_wait_s),
        HIVEBUS_WORK_ACK_WAIT_S=str(settings.work_ack_wait_s),
        PYTHONPATH=str(E2E_DIR),
    )
    return subprocess.Popen(
        [str(HIVEBUS), "serve", *service, "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def test_orchestrator_killed_mid_task_and_restarted(
    tmp_path: Path, settings: Settings
) -> None:
    """After SIGKILL and restart, every sub-task runs once and the task completes."""
    model = write_script(
        tmp_path,
        "slow.yaml",
        [{"tool": "pause", "args": {"seconds": 0.3}}, {"text": "ok"}],
    )
    write_config(
        tmp_path,
        {"slow": {"system": "s", "model": model, "tools": ["slowtools:pause"], "concurrency": 4}},
    )
    config_file = tmp_path / "hivebus.yaml"
    await provision_all(settings.nats_url or "", settings, ["slow"])
    layer1 = [{"id": f"s{i}", "role": "slow", "prompt": "p"} for i in range(4)]
    layer2 = [
        {"id": f"m{i}", "role": "slow", "prompt": "p", "depends_on": [f"s{i}", f"s{(i + 1) % 4}"]}
        for i in range(4)
    ]
    final = [{"id": "f", "role": "slow", "prompt": "p", "depends_on": [f"m{i}" for i in range(4)]}]
    body = {"task_id": "crash", "goal": "g", "plan": {"subtasks": layer1 + layer2 + final}}

    agent = _spawn(config_file, settings, "agent", "--role", "slow")
    orchestrator = _spawn(config_file, settings, "orchestrator")
    restarted: subprocess.Popen[bytes] | None = None
    started: Counter[str] = Counter()
    finished: Counter[str] = Counter()
    result: TaskFinished | None = None
    try:
        async with HiveClient(settings.nats_url or "", settings) as client:
            await client.submit(body)
            async with asyncio.timeout(60):
                async for _, event in client.follow("crash"):
                    if isinstance(event, SubTaskStarted):
                        started[event.subtask_id] += 1
                    elif isinstance(event, SubTaskFinished):
                        finished[event.subtask_id] += 1
                        if sum(finished.values()) == 2 and restarted is None:
                            os.killpg(orchestrator.pid, signal.SIGKILL)
                            orchestrator.wait()
                            restarted = _spawn(config_file, settings, "orchestrator")
                    elif isinstance(event, TaskFinished):
                        result = event
            _, states, _ = await client.status("crash")
    finally:
        for proc in (agent, orchestrator, restarted):
            if proc is not None:
                _stop(proc)
    assert restarted is not None, "the orchestrator was never killed"
    assert orchestrator.returncode == -signal.SIGKILL
    assert result is not None
    assert result.status == TaskStatus.COMPLETED
    assert all(s.status == SubTaskStatus.COMPLETED for s in result.subtasks)
    assert len(result.subtasks) == 9
    assert set(started.values()) == {1}, f"a sub-task ran twice: {started}"
    assert sum(started.values()) == 9
    assert all(s.attempt == 1 for s in states)
