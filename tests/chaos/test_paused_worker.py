"""A worker frozen (SIGSTOP) past ack_wait mid-tool-call while a second worker takes over."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from chaos_tools import CALLS, LEDGER
from hivetest import write_config, write_script
from process_fleet import Fleet, chaos_settings, read_events, wait_until

from hivebus.console.client import HiveClient
from hivebus.console.stack import provision_all
from hivebus.contracts import RunCheckpoint, SubTaskStatus, TaskFinished, TaskStatus, subjects
from hivebus.core import EmbeddedNats, jetstream

pytestmark = pytest.mark.chaos

TOOL_S = 3.0
"""How long the tool takes: the first worker is frozen inside it."""
KEY = subjects.checkpoint_key("paused", "s", 1)


def _role(tmp_path: Path) -> dict[str, Any]:
    """One slow write, then an answer; one run at a time per worker."""
    model = write_script(
        tmp_path,
        "slow.yaml",
        [{"tool": "slow_append", "args": {"seconds": TOOL_S}}, {"text": "done"}],
    )
    return {
        "system": "s",
        "model": model,
        "tools": ["chaos_tools:slow_append"],
        "tiers": ["read", "write_safe"],
        "concurrency": 1,
    }


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _check_tool_calls(workspace: Path) -> None:
    """Both workers ran the tool call with the same idempotency key; it took effect once."""
    entered = [line.split(" ") for line in _lines(workspace / "entered")]
    assert len({key for key, _ in entered}) == 1
    assert len({pid for _, pid in entered}) == 2, "by two different processes"
    assert len(_lines(workspace / CALLS)) == 2
    assert len(_lines(workspace / LEDGER)) == 1


async def test_paused_worker_is_fenced(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    """The frozen worker is fenced on waking: one terminal result, from the run's new owner."""
    settings = chaos_settings(nats_server.url)
    workspace = write_config(tmp_path, {"slow": _role(tmp_path)}).workspace_dir()
    await provision_all(nats_server.url, settings, ["slow"])
    subtask = {"id": "s", "role": "slow", "prompt": "p"}
    body = {"task_id": "paused", "goal": "g", "plan": {"subtasks": [subtask]}}

    with Fleet(tmp_path / "hivebus.yaml", settings, tmp_path / "logs") as fleet:
        first = fleet.agent("slow")
        fleet.orchestrator()
        async with HiveClient(nats_server.url, settings) as client:
            runs = await (await jetstream(client.broker)).key_value(subjects.RUNS_BUCKET)

            async def first_in_tool() -> bool:
                return (workspace / "entered").exists()

            async def first_fenced() -> bool:
                return '"run_fenced"' in fleet.log(first)

            await client.submit(body)
            await wait_until(first_in_tool, "the first worker entering the tool")
            first_owner = RunCheckpoint.model_validate_json(
                (await runs.get(KEY)).value or b""
            ).owner
            fleet.signal(first, signal.SIGSTOP)
            stopped_at = time.monotonic()
            second = fleet.agent("slow")
            result: TaskFinished | None = None
            async with asyncio.timeout(30):
                async for _, event in client.follow("paused"):
                    result = event if isinstance(event, TaskFinished) else result
            stopped_s = time.monotonic() - stopped_at
            _, before_wake, _ = await client.status("paused")
            fleet.signal(first, signal.SIGCONT)
            await wait_until(first_fenced, "the woken worker finding itself fenced")
            _, after_wake, _ = await client.status("paused")
            checkpoint = RunCheckpoint.model_validate_json((await runs.get(KEY)).value or b"")
            events = await read_events(await jetstream(client.broker), "paused")
        first_alive = first.poll() is None
        second_resumed = '"run_resumed"' in fleet.log(second)
        fenced = fleet.log(first).count('"run_fenced"')

    finished = [e for kind, e in events if kind == "subtask_finished"]
    calls, ledger = _lines(workspace / CALLS), _lines(workspace / LEDGER)
    print(  # noqa: T201 - the chaos summary line is this test's report
        f"CHAOS paused-worker: ack_wait_s={settings.work_ack_wait_s:g} "
        f"stopped_s={stopped_s:.1f} finished_events={len(finished)} fenced={fenced} "
        f"tool_calls={len(calls)} effects={len(ledger)} second_resumed={second_resumed} "
        f"attempt={after_wake[0].attempt} task={result.status.value if result else None}"
    )
    assert result is not None
    assert result.status == TaskStatus.COMPLETED
    assert [s.id for s in result.subtasks] == ["s"]
    assert len(finished) == 1
    assert second_resumed, "the second worker should have resumed the run from its checkpoint"
    assert first_alive, "the fenced worker should stay up and serve other work"
    assert checkpoint.owner != first_owner, "the run should belong to the second worker"
    assert checkpoint.finished is not None
    [state] = after_wake
    assert after_wake == before_wake, "the woken worker changed the sub-task's state"
    assert state.status == SubTaskStatus.COMPLETED
    assert state.attempt == 1
    assert state.run_id == finished[0]["run_id"] == checkpoint.run_id
    _check_tool_calls(workspace)
