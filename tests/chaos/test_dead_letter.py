"""A sub-task whose tool kills its worker process on every delivery, next to healthy ones."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hivetest import HIVEBUS, write_config, write_script
from process_fleet import Fleet, chaos_settings, wait_until

from hivebus.console.client import HiveClient
from hivebus.console.stack import provision_all
from hivebus.contracts import (
    DeadLetter,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskState,
    SubTaskStatus,
    TaskFinished,
    TaskStatus,
    subjects,
)
from hivebus.contracts.subjects import DeadLetterKind
from hivebus.core import EmbeddedNats, jetstream
from hivebus.orchestrator.state import KvStore

pytestmark = pytest.mark.chaos

MAX_DELIVER = 3
HEALTHY = [f"n{i}" for i in range(5)]
TASK_TIMEOUT_S = 60.0


def _plan() -> dict[str, Any]:
    boom = {"id": "boom", "role": "crashy", "prompt": "crash"}
    after = {"id": "after", "role": "steady", "prompt": "follow up", "depends_on": ["boom"]}
    healthy = [{"id": sid, "role": "steady", "prompt": "fine"} for sid in HEALTHY]
    return {"task_id": "dlq", "goal": "g", "plan": {"subtasks": [boom, after, *healthy]}}


def _roles(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """`crashy` calls the crashing tool first thing; `steady` answers at once."""
    crash_model = write_script(tmp_path, "crash.yaml", [{"tool": "crash"}, {"text": "unreached"}])
    steady_model = write_script(tmp_path, "steady.yaml", [{"text": "fine"}])
    return {
        "crashy": {
            "system": "s",
            "model": crash_model,
            "tools": ["chaos_tools:crash"],
            "concurrency": 1,
        },
        "steady": {"system": "s", "model": steady_model, "concurrency": 4},
    }


@dataclass
class Observed:
    """What the test saw of the task while it ran."""

    begun: float = field(default_factory=time.time)
    crashes: list[int] = field(default_factory=list)
    started: Counter[str] = field(default_factory=Counter)
    finished_at: dict[str, float] = field(default_factory=dict)
    result: TaskFinished | None = None

    def see(self, event: object) -> None:
        """Take one event of the task into account."""
        if isinstance(event, SubTaskStarted):
            self.started[event.subtask_id] += 1
        elif isinstance(event, SubTaskFinished):
            self.finished_at[event.subtask_id] = event.ts.timestamp()
        elif isinstance(event, TaskFinished):
            self.result = event


async def _restart_when_dead(fleet: Fleet, role: str, crashes: list[int]) -> None:
    """Keep one worker of `role` running: each time it exits, count it and start another."""
    worker = fleet.agent(role)
    while True:
        await asyncio.sleep(0.1)
        if worker.poll() is not None:
            crashes.append(worker.returncode)
            worker = fleet.agent(role)


async def _dlq_list(env: dict[str, str]) -> list[dict[str, Any]]:
    """`hivebus dlq list --json`, run as a separate process."""
    proc = await asyncio.create_subprocess_exec(
        str(HIVEBUS),
        "dlq",
        "list",
        "--json",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()
    rows: list[dict[str, Any]] = json.loads(out.decode().strip().splitlines()[-1])
    return rows


def _check_letter(letter: DeadLetter, invocations: list[str]) -> None:
    """The dead letter carries the original assignment, the checkpoint and the error chain."""
    assert letter.why == DeadLetterKind.MAX_DELIVERIES.value
    assert letter.subtask_id == "boom"
    assert letter.deliveries == MAX_DELIVER
    assert len(invocations) == MAX_DELIVER, "each delivery should have reached the tool once"
    assert len({line.split(" ")[0] for line in invocations}) == 1, "resumes reuse the call's key"
    original = SubTaskAssigned.model_validate(letter.original)
    assert (original.task_id, original.subtask_id, original.prompt) == ("dlq", "boom", "crash")
    assert isinstance(letter.checkpoint, dict)
    assert [c["name"] for c in letter.checkpoint["pending_calls"]] == ["crash"]
    assert letter.errors
    assert "max_deliver" in letter.errors[-1]


def _check_task(result: TaskFinished | None, states: list[SubTaskState]) -> None:
    """The crashing sub-task failed, its dependent is blocked, every other one completed."""
    by_id = {s.id: s for s in states}
    assert result is not None
    assert result.status == TaskStatus.PARTIAL
    assert by_id["boom"].status == SubTaskStatus.FAILED
    assert by_id["boom"].reason.startswith("dead-lettered")
    assert by_id["after"].status == SubTaskStatus.BLOCKED
    assert by_id["after"].blocked_by == "boom"
    assert all(by_id[sid].status == SubTaskStatus.COMPLETED for sid in HEALTHY)


async def test_crashing_subtask_is_dead_lettered(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    """After max_deliver crashed deliveries the sub-task is dead-lettered; the rest completes."""
    settings = chaos_settings(nats_server.url, max_deliver=MAX_DELIVER)
    crash_log = write_config(tmp_path, _roles(tmp_path)).workspace_dir() / "crashes"
    await provision_all(nats_server.url, settings, ["crashy", "steady"])

    seen = Observed()
    with Fleet(tmp_path / "hivebus.yaml", settings, tmp_path / "logs") as fleet:
        fleet.agent("steady")
        fleet.orchestrator()
        supervisor = asyncio.create_task(_restart_when_dead(fleet, "crashy", seen.crashes))
        try:
            async with HiveClient(nats_server.url, settings) as client:
                await client.submit(_plan())
                async with asyncio.timeout(TASK_TIMEOUT_S):
                    async for _, event in client.follow("dlq"):
                        seen.see(event)
                supervisor.cancel()
                invocations = crash_log.read_text(encoding="utf-8").splitlines()
                resumed = sum(fleet.log(p).count('"run_resumed"') for p in fleet.processes)
                letters = [(n, d) for n, d in await client.dead_letters() if d.task_id == "dlq"]
                _, states, _ = await client.status("dlq")
                seq = letters[0][0] if letters else 0
                replayed = await client.replay(seq, from_checkpoint=False)
                store = KvStore(
                    await (await jetstream(client.broker)).key_value(subjects.TASKS_BUCKET)
                )

                async def accepted() -> bool:
                    return await store.read_meta(replayed) is not None

                await wait_until(accepted, "the orchestrator accepting the replayed task")
                listed = await _dlq_list(fleet.env())
        finally:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor

    assert len(letters) == 1, f"expected one dead letter, got {letters}"
    letter = letters[0][1]
    healthy_done = [sid for sid in HEALTHY if sid in seen.finished_at]
    dead_after_s = letter.ts.timestamp() - seen.begun
    last_healthy_s = max(seen.finished_at[sid] for sid in healthy_done) - seen.begun
    print(  # noqa: T201 - the chaos summary line is this test's report
        f"CHAOS dead-letter: max_deliver={MAX_DELIVER} deliveries={letter.deliveries} "
        f"tool_invocations={len(invocations)} worker_crashes={len(seen.crashes)} "
        f"runs_resumed={resumed} started_events={seen.started['boom']} "
        f"healthy_completed={len(healthy_done)}/{len(HEALTHY)} "
        f"last_healthy_s={last_healthy_s:.1f} dead_lettered_s={dead_after_s:.1f} "
        f"task={seen.result.status.value if seen.result else None} replay={replayed}"
    )
    _check_letter(letter, invocations)
    assert len(seen.crashes) >= MAX_DELIVER
    assert set(seen.crashes) == {1}, "the workers should have died by the tool's os._exit(1)"
    # One run, resumed from its checkpoint by deliveries 2 and 3: its `SubTaskStarted` has
    # the message id `started-<run_id>`, so the resumes add no event of their own.
    assert resumed == MAX_DELIVER - 1
    assert seen.started["boom"] == 1
    _check_task(seen.result, states)
    assert healthy_done == HEALTHY
    assert last_healthy_s < dead_after_s, "healthy sub-tasks waited for the crashing one"
    assert replayed == f"dlq-replay-{seq}"
    assert any(row["id"] == seq and row["subtask_id"] == "boom" for row in listed)
