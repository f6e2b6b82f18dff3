"""Permissions on, services as processes, each its own identity: forgers refused, a crash survived.

The server has the shipped identities (with generated passwords); `hivebus provision` runs as
the provisioner, then every `serve` process starts with HIVEBUS_PROVISION=false and its own
credentials, as a deployment runs them. While a sub-task works: an anonymous connection is
refused, a client's forged `SubTaskFinished` and an observer's cancel are denied by the server,
and the agent is SIGKILLed; a new agent resumes the run and the task completes with the real
output. `hivebus health` answers for every service.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from pathlib import Path

import nats
import pytest
from hivetest import HIVEBUS, process_env
from test_durable_controls import E2E_DIR, TIMINGS, _pauses, _plan, _plan_script, _Proc, _roles
from test_permission_matrix import _probe, pub

from hivebus.console.client import HiveClient
from hivebus.console.secure import LocalIdentities
from hivebus.contracts import SubTaskStarted, TaskFinished, TaskStatus, subjects
from hivebus.core import EmbeddedNats, Settings

pytestmark = pytest.mark.e2e

TASK = "secure-1"


def _env(url: str, secured: LocalIdentities, name: str, **extra: str) -> dict[str, str]:
    return process_env(
        HIVEBUS_NATS_URL=url,
        HIVEBUS_NATS_USER=name,
        HIVEBUS_NATS_PASSWORD=secured.passwords[name],
        HIVEBUS_PROVISION="false",
        PYTHONPATH=str(E2E_DIR),
        **TIMINGS,
        **extra,
    )


async def _healthy(health_file: Path, env: dict[str, str], timeout_s: float = 60) -> str:
    """`hivebus health` for one service, until it says healthy."""
    async with asyncio.timeout(timeout_s):
        while True:
            done = await asyncio.to_thread(
                subprocess.run,
                [str(HIVEBUS), "health"],
                env={**env, "HIVEBUS_HEALTH_FILE": str(health_file)},
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if done.returncode == 0:
                return done.stdout
            await asyncio.sleep(0.5)


async def _denied(url: str, secured: LocalIdentities, name: str, subject: str) -> bool:
    """Whether the server refuses a publish to `subject` by `name`."""
    op = pub(subject)
    return (await _probe(url, secured, name, [op])).denied(op)


async def test_a_secured_deployment_runs_refuses_forgers_and_recovers_a_killed_agent(
    tmp_path: Path,
) -> None:
    """Every service as its own identity: forged results and foreign cancels never land."""
    config = _roles(tmp_path)
    secured = LocalIdentities(["slow"])
    script = _plan_script(tmp_path, "long.yaml", _pauses(0.4, 6))
    body = _plan(TASK, 120, [{"id": "work", "model": script}])
    async with EmbeddedNats(tmp_path / "nats", authorization=secured.authorization()) as server:
        url = server.url
        provisioned = await asyncio.to_thread(
            subprocess.run,
            [str(HIVEBUS), "provision", "--config", str(config)],
            env=_env(url, secured, "provisioner"),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert provisioned.returncode == 0, provisioned.stderr
        health = {name: tmp_path / f"{name}.health" for name in ("orchestrator", "agent")}

        def start(name: str, identity: str, args: list[str]) -> _Proc:
            env = _env(
                url,
                secured,
                identity,
                HIVEBUS_HEALTH_FILE=str(health[name.split("-", maxsplit=1)[0]]),
            )
            return _Proc([*args, "--config", str(config)], env, tmp_path / f"{name}.log")

        procs = {
            "orchestrator": start("orchestrator", "orchestrator", ["serve", "orchestrator"]),
            "agent": start("agent", "agent-slow", ["serve", "agent", "--role", "slow"]),
        }
        result: TaskFinished | None = None
        try:
            for name, path in health.items():
                said = await _healthy(path, _env(url, secured, "observer"))
                assert said.startswith(f"healthy: {name}"), said
            client_settings = secured.settings(Settings(), "client")
            async with HiveClient(url, client_settings) as client:
                await client.submit(body)
                async with asyncio.timeout(90):
                    async for _, event in client.follow(TASK):
                        if isinstance(event, SubTaskStarted) and "agent" in procs:
                            with pytest.raises(Exception, match=r"(?i)authorization"):
                                await nats.connect(url, allow_reconnect=False)
                            assert await _denied(
                                url,
                                secured,
                                "client",
                                subjects.event(TASK, subjects.EventKind.SUBTASK_FINISHED),
                            )
                            assert await _denied(
                                url,
                                secured,
                                "observer",
                                subjects.control(TASK, subjects.ControlKind.CANCEL),
                            )
                            procs.pop("agent").signal(signal.SIGKILL)
                            procs["agent-2"] = start(
                                "agent-2", "agent-slow", ["serve", "agent", "--role", "slow"]
                            )
                        elif isinstance(event, TaskFinished):
                            result = event
        finally:
            for proc in procs.values():
                proc.stop()
        log = (tmp_path / "nats" / "nats-server.log").read_text(errors="replace")
    assert result is not None
    assert result.status == TaskStatus.COMPLETED, result.reason
    assert result.output == {"work": "done"}
    violations = re.findall(r'user:([\w-]+)" - (\w+) Violation - Subject "([^"]+)"', log)
    assert {who for who, _, _ in violations} == {"client", "observer"}, violations
