"""Approvals across crashes, with real processes: SIGKILLed agents and orchestrators.

- An agent killed after an approved call applied its effect, before the run checkpointed
  it: the next worker runs the call again with the same idempotency key, so the effect
  happens once.
- The orchestrator killed while two approvals wait: a new one applies the decision for one,
  and the other's durable expiry still fires, resolving it as a rejection.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chaos_tools import CALLS, LEDGER
from hivetest import write_config, write_script
from process_fleet import Fleet, chaos_settings, read_events, wait_until

from hivebus.console.client import HiveClient
from hivebus.console.stack import provision_all
from hivebus.contracts import (
    ApprovalDecided,
    Decision,
    SubTaskState,
    SubTaskStatus,
    TaskStatus,
    subjects,
)
from hivebus.core import EmbeddedNats, Publisher, jetstream
from hivebus.core import kv as kvcas

pytestmark = pytest.mark.chaos

ROLE = "risky"
TASK_TIMEOUT_S = 60.0


def _config(tmp_path: Path, seconds: float, timeout_s: float = 3600) -> Path:
    model = write_script(
        tmp_path,
        "risky.yaml",
        [{"tool": "risky_apply", "args": {"seconds": seconds}}, {"text": "applied"}],
    )
    write_config(
        tmp_path,
        {
            ROLE: {
                "system": "s",
                "model": model,
                "tools": ["chaos_tools:risky_apply"],
                "tiers": ["read"],
                "approval_timeout_s": timeout_s,
                "validators": [],
            }
        },
    )
    return tmp_path / "hivebus.yaml"


def _task(task_id: str, subtasks: list[str]) -> dict[str, Any]:
    specs = [{"id": sid, "role": ROLE, "prompt": "apply"} for sid in subtasks]
    return {"task_id": task_id, "goal": "apply with approval", "plan": {"subtasks": specs}}


async def _events(client: HiveClient, task_id: str, kind: str) -> list[dict[str, Any]]:
    js = await jetstream(client.broker)
    try:
        return [body for k, body in await read_events(js, task_id) if k == kind]
    except Exception:  # noqa: BLE001 - no event yet (the ordered read times out)
        return []


async def _decide(client: HiveClient, task_id: str, ap: str, decision: Decision) -> None:
    decided = ApprovalDecided(task_id=task_id, approval_id=ap, decision=decision, by="alice")
    await Publisher(client.broker, 5.0).publish(decided)


async def _subtask(client: HiveClient, task_id: str, sid: str) -> SubTaskState | None:
    js = await jetstream(client.broker)
    tasks = await js.key_value(subjects.TASKS_BUCKET)
    state, _ = await kvcas.read(tasks, subjects.subtask_key(task_id, sid), SubTaskState)
    return state


async def _finished(client: HiveClient, task_id: str) -> dict[str, Any]:
    async def done() -> bool:
        return bool(await _events(client, task_id, "task_finished"))

    await wait_until(done, "the task finishing", TASK_TIMEOUT_S)
    return (await _events(client, task_id, "task_finished"))[0]


async def test_agent_killed_after_the_approved_effect_applies_it_once(tmp_path: Path) -> None:
    """SIGKILL between the approved call's effect and its checkpoint: one effect, completed."""
    config = _config(tmp_path, seconds=4.0)
    workspace = tmp_path / "workspace"
    async with EmbeddedNats(tmp_path / "nats") as server:
        settings = chaos_settings(server.url)
        await provision_all(server.url, settings, [ROLE])
        with Fleet(config, settings, tmp_path / "logs") as fleet:
            fleet.orchestrator()
            agents = [fleet.agent(ROLE), fleet.agent(ROLE)]
            async with HiveClient(server.url, settings) as client:
                await client.submit(_task("kill-1", ["apply"]))

                async def asked() -> bool:
                    return bool(await _events(client, "kill-1", "approval_requested"))

                await wait_until(asked, "the approval request", 30)
                [request] = await _events(client, "kill-1", "approval_requested")
                await _decide(client, "kill-1", request["approval_id"], Decision.APPROVE)
                entered = workspace / "entered"

                async def started() -> bool:
                    return entered.exists()

                await wait_until(started, "the approved call starting", 30)
                pid = int(entered.read_text().split()[-1])
                [victim] = [a for a in agents if a.pid == pid]
                fleet.kill(victim)
                finished = await _finished(client, "kill-1")
    ledger = (workspace / LEDGER).read_text().splitlines()
    calls = (workspace / CALLS).read_text().splitlines()
    assert finished["status"] == TaskStatus.COMPLETED
    assert len(ledger) == 1, ledger  # the effect, once
    assert len(calls) >= 2, calls  # the call was run again after the kill, with the same key
    assert len({line.split()[1] for line in calls}) == 1


async def test_orchestrator_killed_while_approvals_wait(tmp_path: Path) -> None:
    """A new orchestrator applies a decision, and the other approval's expiry still fires."""
    config = _config(tmp_path, seconds=0.0, timeout_s=8)
    workspace = tmp_path / "workspace"
    async with EmbeddedNats(tmp_path / "nats") as server:
        settings = chaos_settings(server.url)
        await provision_all(server.url, settings, [ROLE])
        with Fleet(config, settings, tmp_path / "logs") as fleet:
            orchestrator = fleet.orchestrator()
            fleet.agent(ROLE)
            async with HiveClient(server.url, settings) as client:
                await client.submit(_task("orch-1", ["a", "b"]))

                async def both_waiting() -> bool:
                    states = [await _subtask(client, "orch-1", sid) for sid in ("a", "b")]
                    return all(
                        s is not None and s.status == SubTaskStatus.AWAITING_APPROVAL
                        for s in states
                    )

                await wait_until(both_waiting, "both sub-tasks awaiting approval", 30)
                fleet.kill(orchestrator)
                fleet.orchestrator()
                requests = await _events(client, "orch-1", "approval_requested")
                by_subtask = {r["subtask_id"]: r["approval_id"] for r in requests}
                await _decide(client, "orch-1", by_subtask["a"], Decision.APPROVE)
                finished = await _finished(client, "orch-1")
                resolved = await _events(client, "orch-1", "approval_resolved")
    by_id = {r["approval_id"]: r for r in resolved}
    assert finished["status"] == TaskStatus.COMPLETED
    assert by_id[by_subtask["a"]]["decision"] == "approve"
    assert by_id[by_subtask["b"]]["decision"] == "reject"
    assert by_id[by_subtask["b"]]["timed_out"] is True
    ledger = (workspace / LEDGER).read_text().splitlines()
    assert [line.split()[0] for line in ledger] == ["a"]
    summary = {s["id"]: s["approvals"] for s in finished["subtasks"]}
    assert json.dumps(summary)  # each sub-task's approvals are in the result
    assert [a["decision"] for a in summary["a"]] == ["approve"]
    assert [a["timed_out"] for a in summary["b"]] == [True]
