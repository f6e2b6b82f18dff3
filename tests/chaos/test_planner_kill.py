"""The planner's worker SIGKILLed in the middle of its run: another worker resumes the run."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
from hivetest import write_config, write_script
from process_fleet import Fleet, chaos_settings, wait_until

from hivebus.console.client import HiveClient
from hivebus.console.stack import provision_all
from hivebus.contracts import (
    PLANNING_SUBTASK,
    PlanReady,
    SubTaskStarted,
    TaskFinished,
    TaskStatus,
    subjects,
)
from hivebus.core import EmbeddedNats, jetstream

pytestmark = pytest.mark.chaos

PLAN = {"subtasks": [{"id": "only", "role": "worker", "prompt": "do it"}]}


async def test_a_killed_planner_resumes_and_its_plan_runs(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    """Killed after its first step was checkpointed, the planner's run resumes at step 2."""
    settings = chaos_settings(nats_server.url)
    planner = write_script(
        tmp_path,
        "planner.yaml",
        [
            {"tool": "list_files", "args": {}, "usage": {"input_tokens": 10, "output_tokens": 5}},
            {
                "text": json.dumps(PLAN),
                "delay_s": 4,
                "usage": {"input_tokens": 20, "output_tokens": 9},
            },
        ],
    )
    worker = write_script(tmp_path, "worker.yaml", [{"text": "done"}])
    write_config(
        tmp_path,
        {
            "planner": {
                "system": "plan",
                "model": planner,
                "tools": ["hivebus.agent.tools.workspace:list_files"],
                "validators": [],
                "concurrency": 1,
            },
            "worker": {"system": "work", "model": worker},
        },
    )
    await provision_all(nats_server.url, settings, ["planner", "worker"])
    with Fleet(tmp_path / "hivebus.yaml", settings, tmp_path / "logs") as fleet:
        first = fleet.agent("planner")
        fleet.agent("worker")
        fleet.orchestrator()
        async with HiveClient(nats_server.url, settings) as client:
            runs = await (await jetstream(client.broker)).key_value(subjects.RUNS_BUCKET)

            async def first_step_saved() -> bool:
                try:
                    entry = await runs.get(
                        subjects.checkpoint_key("plan-kill", PLANNING_SUBTASK, 1)
                    )
                except Exception:  # noqa: BLE001 - not written yet
                    return False
                return b'"phase":"model"' in (entry.value or b"") and b"list_files" in (
                    entry.value or b""
                )

            await client.submit({"task_id": "plan-kill", "goal": "Plan and do it."})
            await wait_until(first_step_saved, "the planner's first step checkpointed")
            fleet.signal(first, signal.SIGKILL)
            second = fleet.agent("planner")
            events = []
            async with asyncio.timeout(60):
                async for _, event in client.follow("plan-kill"):
                    events.append(event)
        resumed = fleet.log(second)
    planner_starts = [
        e for e in events if isinstance(e, SubTaskStarted) and e.subtask_id == PLANNING_SUBTASK
    ]
    assert [e.attempt for e in planner_starts] == [1]  # one run (a resumed run keeps its id)
    assert "run_resumed" in resumed
    assert '"steps_done": 2' in resumed  # the first turn (model step, tool step) is not redone
    assert any(isinstance(e, PlanReady) for e in events)
    result = events[-1]
    assert isinstance(result, TaskFinished)
    assert result.status == TaskStatus.COMPLETED, result.reason
    assert result.output == {"only": "done"}
