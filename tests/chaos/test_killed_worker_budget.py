"""A worker SIGKILLed inside a model call, holding a task-budget reservation (found by kills).

Before a model call the agent reserves the call's usage bound in the task's ledger and
settles it after the call. A worker killed in between never settles, and nothing else
releases its reservation: the task's `reserved_tokens` stays held for the task's life, so a
budget with little headroom refuses the retry that should have replaced the dead call.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest
from hivetest import write_config, write_script
from nats.js.errors import KeyNotFoundError
from process_fleet import Fleet, chaos_settings, wait_until

from hivebus.console.client import HiveClient
from hivebus.console.stack import provision_all
from hivebus.contracts import TaskFinished, TaskStatus, subjects
from hivebus.core import EmbeddedNats, jetstream
from hivebus.core.budget import LedgerState

pytestmark = pytest.mark.chaos

CALL_TOKENS = 300
"""The scripted call's usage, which is also its reservation (a scripted model knows it)."""
BUDGET_TOKENS = 500
"""Room for the call once, not twice: the retry fits only if the dead call's hold is gone."""


async def test_reservation_of_a_killed_worker_is_released(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    """After a worker dies mid-call the retry fits the budget and nothing stays reserved."""
    settings = chaos_settings(nats_server.url)
    usage = {"input_tokens": 200, "output_tokens": CALL_TOKENS - 200}
    model = write_script(tmp_path, "slow.yaml", [{"text": "done", "delay_s": 3, "usage": usage}])
    write_config(tmp_path, {"thinker": {"system": "s", "model": model, "concurrency": 1}})
    await provision_all(nats_server.url, settings, ["thinker"])
    subtask = {"id": "s", "role": "thinker", "prompt": "p"}
    subtask["limits"] = {"max_tokens": BUDGET_TOKENS, "max_wall_s": 8}
    body = {
        "task_id": "budget",
        "goal": "g",
        "budget": {"max_tokens": BUDGET_TOKENS},
        "plan": {"subtasks": [subtask]},
    }
    with Fleet(tmp_path / "hivebus.yaml", settings, tmp_path / "logs") as fleet:
        first = fleet.agent("thinker")
        fleet.orchestrator()
        async with HiveClient(nats_server.url, settings) as client:
            kv = await (await jetstream(client.broker)).key_value(subjects.TASKS_BUCKET)

            async def ledger() -> LedgerState | None:
                try:
                    entry = await kv.get(f"budget.{subjects.LEDGER_KEY_SUFFIX}")
                except KeyNotFoundError:  # no call reserved yet
                    return None
                return LedgerState.model_validate_json(entry.value or b"")

            async def call_in_flight() -> bool:
                state = await ledger()
                return state is not None and state.reserved_tokens > 0

            await client.submit(body)
            await wait_until(call_in_flight, "the first worker reserving for its model call")
            fleet.signal(first, signal.SIGKILL)
            killed_at = time.monotonic()
            fleet.agent("thinker")
            result: TaskFinished | None = None
            async with asyncio.timeout(40):
                async for _, event in client.follow("budget"):
                    result = event if isinstance(event, TaskFinished) else result
            final = await ledger()
    assert result is not None
    assert final is not None
    print(  # noqa: T201 - the chaos summary line is this test's report
        f"CHAOS killed-worker-budget: task={result.status.value} "
        f"used_tokens={final.used_tokens} reserved_tokens_left={final.reserved_tokens} "
        f"seconds_after_kill={time.monotonic() - killed_at:.1f}"
    )
    assert result.status == TaskStatus.COMPLETED, result.reason
    assert final.used_tokens == CALL_TOKENS
    assert final.reserved_tokens == 0, "a dead worker's reservation is still held"
