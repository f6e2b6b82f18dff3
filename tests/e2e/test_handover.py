"""A large dependency output is handed over by note only once that note can be read."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hivetest import write_config, write_script
from nats.js import JetStreamContext

from hivebus.agent.startup import start_agent
from hivebus.console.client import HiveClient
from hivebus.console.stack import provision_all
from hivebus.contracts import (
    StepRecorded,
    SubTaskFinished,
    SubTaskStarted,
    TaskFinished,
    TaskStatus,
    subjects,
)
from hivebus.contracts.knowledge import output_note_path
from hivebus.contracts.subjects import EventKind
from hivebus.core import Settings, jetstream
from hivebus.knowledge.service import start_knowledge
from hivebus.orchestrator.service import start_orchestrator

pytestmark = pytest.mark.e2e

TASK = "handover"
NOTE = output_note_path(TASK, "big")


async def _handover_retried(js: JetStreamContext) -> bool:
    """Whether the orchestrator has put the finished event back at least once."""
    consumer = subjects.orchestrator_consumer(EventKind.SUBTASK_FINISHED)
    info = await js.consumer_info(subjects.EVENTS_STREAM, consumer)
    return bool(info.num_redelivered)


async def test_a_dependent_reads_the_note_of_a_large_output_while_the_store_lagged(
    tmp_path: Path, settings: Settings
) -> None:
    """The knowledge service starts late: the dependent still finds the note it is sent to."""
    big = write_script(tmp_path, "big.yaml", [{"text": "bee " * 3000}])
    reader = write_script(
        tmp_path,
        "reader.yaml",
        [{"tool": "kb_read", "args": {"path": NOTE}}, {"text": "read it"}],
    )
    tools = ["hivebus.agent.tools.knowledge:kb_read"]
    config = write_config(
        tmp_path,
        {
            "big": {"system": "s", "model": big},
            "reader": {"system": "s", "model": reader, "tools": tools},
        },
    )
    fast = settings.model_copy(update={"handover_wait_s": 0.3, "nak_delay_s": 0.2})
    url = fast.nats_url or ""
    await provision_all(url, fast, ["big", "reader"])
    brokers = [await start_orchestrator(fast, config, url)]
    brokers += [await start_agent(fast, config, role, url) for role in ("big", "reader")]
    try:
        async with HiveClient(url, fast) as client:
            js = await jetstream(client.broker)
            await client.submit(
                {
                    "task_id": TASK,
                    "goal": "hand a long text over",
                    "plan": {
                        "subtasks": [
                            {"id": "big", "role": "big", "prompt": "write a lot"},
                            {
                                "id": "use",
                                "role": "reader",
                                "prompt": "read",
                                "depends_on": ["big"],
                            },
                        ]
                    },
                }
            )
            events = []
            async with asyncio.timeout(60):
                async for _, event in client.follow(TASK):
                    events.append(event)
                    if isinstance(event, SubTaskFinished) and event.subtask_id == "big":
                        while not await _handover_retried(js):  # noqa: ASYNC110 - a server-side count
                            await asyncio.sleep(0.05)
                        started = [e for e in events if isinstance(e, SubTaskStarted)]
                        assert [e.subtask_id for e in started] == ["big"]
                        brokers.append(await start_knowledge(fast, tmp_path / "kb", url))
                    if isinstance(event, TaskFinished):
                        break
    finally:
        for broker in reversed(brokers):
            await broker.stop()
    result = events[-1]
    assert isinstance(result, TaskFinished)
    assert result.status == TaskStatus.COMPLETED, result.reason
    [read] = [e for e in events if isinstance(e, StepRecorded) and e.name == "kb_read"]
    assert read.error is None, read.output
    assert read.output["ok"] is True
    assert read.output["data"]["path"] == NOTE
