"""Following a task whose history is longer than a consumer's ack window (found by agent kills).

A 200-sub-task task stores about 1,100 events (started, steps, finished, resumed runs).
`HiveClient.follow` reads them through FastStream's `get_one`, which pulls from an
ephemeral consumer with explicit acks, `max_ack_pending` 1000 and `ack_wait` 30 s, and
never acks: after 1000 events the server sends nothing new, and 30 s later it redelivers
the first 1000 again. `hivebus watch`, `submit --wait` and `run` follow the same way.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from hivebus.console.client import HiveClient
from hivebus.console.stack import provision_all
from hivebus.contracts import SubTaskStarted, TaskFinished, TaskStatus, Usage, subjects
from hivebus.contracts.subjects import EventKind
from hivebus.core import Settings

pytestmark = pytest.mark.chaos

EVENTS_BEFORE_THE_END = 1100


async def test_follow_reaches_the_end_of_a_task_with_many_events(settings: Settings) -> None:
    """A follower sees every event of a long task once, up to its TaskFinished."""
    url = settings.nats_url or ""
    await provision_all(url, settings, [])
    async with HiveClient(url, settings) as client:
        for i in range(EVENTS_BEFORE_THE_END):
            started = SubTaskStarted(
                task_id="long", subtask_id=f"s{i}", attempt=1, run_id="r", role="w", model="m"
            )
            await client.broker.publish(
                started,
                subjects.event("long", EventKind.SUBTASK_STARTED),
                stream=subjects.EVENTS_STREAM,
            )
        end = TaskFinished(
            task_id="long", status=TaskStatus.COMPLETED, reason="r", usage=Usage(), subtasks=[]
        )
        await client.broker.publish(
            end, subjects.event("long", EventKind.TASK_FINISHED), stream=subjects.EVENTS_STREAM
        )
        seen: Counter[str] = Counter()
        async with asyncio.timeout(30):
            async for kind, event in client.follow("long", idle_timeout_s=5):
                seen[kind if kind == "task_finished" else getattr(event, "subtask_id", kind)] += 1
    assert seen["task_finished"] == 1
    assert len(seen) == EVENTS_BEFORE_THE_END + 1
    assert set(seen.values()) == {1}
