"""The orchestrator's concurrent updates of one task's meta, grouped, on a real KV bucket.

Every result of a task is counted in its meta. Handlers counting at once in one process go
in one compare-and-set together (`ChangeGroups`): the count is exact, exactly one of them
sees the count reach every sub-task (and so finishes the task), and the meta takes far fewer
writes than there were counts.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import nats
import pytest

from hivebus.contracts import TaskMeta, subjects
from hivebus.core import EmbeddedNats
from hivebus.orchestrator import changes
from hivebus.orchestrator.scheduler import Tracked
from hivebus.orchestrator.state import KvStore

pytestmark = pytest.mark.e2e

TASK = "counted"
SUBTASKS = 300


async def test_concurrent_counts_of_one_meta_are_exact_and_finish_once(
    nats_server: EmbeddedNats,
) -> None:
    """300 counts at once: 300 finished, one caller saw the last, fewer than 150 writes."""
    nc = await nats.connect(nats_server.url)
    try:
        kv = await nc.jetstream().create_key_value(bucket=subjects.TASKS_BUCKET, history=1)
        store = KvStore(kv)
        await store.update_meta(TASK, changes.start_task(TASK, SUBTASKS, datetime.now(UTC)))

        async def count(index: int) -> bool:
            await asyncio.sleep(0.001 * (index % 7))  # results arrive spread out a little
            counted = Tracked(changes.count_finished([index]))
            after = await store.update_meta(TASK, counted)
            return counted.wrote and after is not None and after.finished >= after.total

        saw_last = await asyncio.gather(*(count(i) for i in range(SUBTASKS)))
        assert sum(saw_last) == 1
        entry = await kv.get(subjects.meta_key(TASK))
        assert entry.value is not None
        meta = TaskMeta.model_validate_json(entry.value)
        assert meta.finished == SUBTASKS
        assert all(meta.is_finished(i) for i in range(SUBTASKS))
        writes = int(entry.revision or 0)  # only this key in the bucket: its revision counts
        assert writes < SUBTASKS / 2
    finally:
        await nc.close()
