"""The orchestrator keeps in memory only what tasks still running need (real bus, real KV)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hivetest import write_config, write_script

from hivebus.console.client import HiveClient
from hivebus.console.stack import LocalStack
from hivebus.contracts import SubTaskStatus, TaskFinished, TaskStatus
from hivebus.core import Settings
from hivebus.orchestrator.service import SERVICE, OrchestratorService
from hivebus.orchestrator.state import KvStore

TASKS = 4
SUBTASKS = 3


def _plan(task_id: str) -> dict[str, object]:
    first = [{"id": f"s{i}", "role": "worker", "prompt": f"Part {i}."} for i in range(SUBTASKS)]
    last = {"id": "end", "role": "worker", "prompt": "Join.", "depends_on": ["s0", "s1", "s2"]}
    return {"task_id": task_id, "goal": "remember nothing", "plan": {"subtasks": [*first, last]}}


async def test_a_closed_task_leaves_nothing_in_the_orchestrators_caches(
    tmp_path: Path, settings: Settings
) -> None:
    """After every task ended, the own-write cache and the graph cache hold none of them.

    A busy orchestrator used to keep 50,000 states of closed tasks (about 2 kB each) for the
    rest of its life; a late event for a closed task reads the bucket, and is still harmless.
    """
    model = write_script(tmp_path, "done.yaml", [{"text": "done"}, {"then": "repeat"}])
    config = write_config(tmp_path, {"worker": {"system": "Work.", "model": model}})
    ids = [f"mem-{i}" for i in range(TASKS)]
    async with LocalStack(settings, config) as stack, HiveClient(stack.url, settings) as client:
        service: OrchestratorService = next(
            b.context.get(SERVICE) for b in stack.brokers if b.context.get(SERVICE) is not None
        )
        store = service.scheduler.store
        assert isinstance(store, KvStore)
        for task_id in ids:
            await client.submit(_plan(task_id))
        results: list[TaskFinished] = []
        async with asyncio.timeout(60):
            for task_id in ids:
                async for _, event in client.follow(task_id):
                    if isinstance(event, TaskFinished):
                        results.append(event)
        assert [r.status for r in results] == [TaskStatus.COMPLETED] * TASKS
        async with asyncio.timeout(10):  # the task closes just after its `TaskFinished` is out
            while len(store.cache) or any(service.scheduler.graphs.get(t) for t in ids):  # noqa: ASYNC110 - state of another task
                await asyncio.sleep(0.02)
        # A late duplicate of a result, after the task closed: applied nowhere, read from KV.
        state = await store.read_subtask(ids[0], "end")
        assert state is not None
        assert state.status == SubTaskStatus.COMPLETED
        meta = await store.read_meta(ids[0])
        assert meta is not None
        assert meta.status == TaskStatus.COMPLETED
