"""The whole flow on a real nats-server: orchestrator and agents in-process, real JetStream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hivetest import write_config, write_script
from nats.js import JetStreamContext
from pydantic import BaseModel

from hivebus.console.client import HiveClient
from hivebus.console.stack import LocalStack
from hivebus.contracts import (
    SubTaskStarted,
    SubTaskStatus,
    TaskFinished,
    TaskRejected,
    TaskStatus,
    subjects,
)
from hivebus.core import HivebusConfig, Settings, jetstream

pytestmark = pytest.mark.e2e

TOOLS = [
    "hivebus.agent.tools.workspace:write_file",
    "hivebus.agent.tools.workspace:read_file",
    "hivebus.agent.tools.workspace:list_files",
]


def _config(tmp_path: Path) -> HivebusConfig:
    writes = write_script(
        tmp_path,
        "writer.yaml",
        [
            {"tool": "write_file", "args": {"path": "notes/a.md", "content": "# A"}},
            {"text": "wrote a note", "usage": {"input_tokens": 100, "output_tokens": 10}},
        ],
    )
    answers = write_script(tmp_path, "answer.yaml", [{"text": "done"}])
    stuck = write_script(
        tmp_path, "stuck.yaml", [{"tool": "list_files", "args": {}}, {"then": "repeat"}]
    )
    role = {"system": "You help.", "tools": TOOLS, "tiers": ["read", "write_safe"]}
    return write_config(
        tmp_path,
        {
            "research": {**role, "model": writes, "allow_models": ["scripted:*"]},
            "summary": {**role, "model": answers, "allow_models": ["scripted:*"]},
            "stuck": {**role, "model": stuck, "limits": {"max_steps": 4}},
        },
    )


def _plan(task_id: str, subtasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"task_id": task_id, "goal": "test the flow", "plan": {"subtasks": subtasks}}


DIAMOND = [
    {"id": "a", "role": "research", "prompt": "research a"},
    {"id": "b", "role": "research", "prompt": "research b"},
    {"id": "c", "role": "research", "prompt": "research c"},
    {"id": "d", "role": "summary", "prompt": "combine", "depends_on": ["a", "b", "c"]},
    {"id": "e", "role": "summary", "prompt": "review", "depends_on": ["d"]},
]


async def _acked_submissions(js: JetStreamContext) -> int:
    info = await js.consumer_info(subjects.TASKS_STREAM, subjects.ORCHESTRATOR_SUBMIT_CONSUMER)
    return int(info.ack_floor.stream_seq if info.ack_floor else 0)


async def wait_for(
    probe: Callable[[], Awaitable[int]], expected: int, timeout_s: float = 10.0
) -> None:
    """Poll an observable value until it equals `expected` (fails after `timeout_s`)."""
    async with asyncio.timeout(timeout_s):
        while (value := await probe()) != expected:  # noqa: ASYNC110 - a server-side counter has no event to await
            await asyncio.sleep(0.05)
    assert value == expected


async def _events(client: HiveClient, task_id: str) -> list[tuple[str, BaseModel]]:
    events = []
    async with asyncio.timeout(30):
        async for kind, event in client.follow(task_id):
            events.append((kind, event))
    return events


async def test_happy_dag_completes_with_outputs_and_usage(
    tmp_path: Path, settings: Settings
) -> None:
    """A diamond DAG runs every sub-task once, in dependency order, and ends `completed`."""
    config = _config(tmp_path)
    async with LocalStack(settings, config) as stack, HiveClient(stack.url, settings) as client:
        await client.submit(_plan("happy", DIAMOND))
        events = await _events(client, "happy")
    kinds = [kind for kind, _ in events]
    result = events[-1][1]
    assert isinstance(result, TaskFinished)
    assert result.status == TaskStatus.COMPLETED
    assert result.output == {"e": "done"}
    assert [s.status for s in result.subtasks] == [SubTaskStatus.COMPLETED] * 5
    assert result.usage.tool_calls == 3
    assert result.usage.input_tokens >= 300
    assert kinds.count("subtask_started") == 5
    started = [e.subtask_id for k, e in events if isinstance(e, SubTaskStarted)]
    assert started.index("d") > max(started.index(x) for x in "abc")
    assert started.index("e") > started.index("d")
    assert (config.workspace_dir() / "notes" / "a.md").read_text() == "# A"


async def test_failure_blocks_every_transitive_dependent(
    tmp_path: Path, settings: Settings
) -> None:
    """A sub-task over its step limit blocks its dependents (root cause named); others finish."""
    config = _config(tmp_path)
    plan = [
        {"id": "ok", "role": "research", "prompt": "fine"},
        {"id": "bad", "role": "stuck", "prompt": "loops"},
        {"id": "mid", "role": "summary", "prompt": "x", "depends_on": ["bad", "ok"]},
        {"id": "end", "role": "summary", "prompt": "y", "depends_on": ["mid"]},
        {"id": "side", "role": "summary", "prompt": "z", "depends_on": ["ok"]},
    ]
    async with LocalStack(settings, config) as stack, HiveClient(stack.url, settings) as client:
        await client.submit(_plan("fails", plan))
        events = await _events(client, "fails")
    result = events[-1][1]
    assert isinstance(result, TaskFinished)
    assert result.status == TaskStatus.PARTIAL
    assert result.degraded
    by_id = {s.id: s for s in result.subtasks}
    assert by_id["bad"].status == SubTaskStatus.BUDGET_EXCEEDED
    assert "max_steps" in by_id["bad"].reason
    for blocked in ("mid", "end"):
        assert by_id[blocked].status == SubTaskStatus.BLOCKED
        assert by_id[blocked].blocked_by == "bad"
    assert by_id["side"].status == SubTaskStatus.COMPLETED
    assert result.output == {"side": "done"}


async def test_invalid_plan_answered_by_one_task_rejected(
    tmp_path: Path, settings: Settings
) -> None:
    """A plan with several faults gets one `TaskRejected` listing every one, and no work."""
    config = _config(tmp_path)
    plan = [
        {"id": "x", "role": "research", "prompt": "p", "depends_on": ["y"]},
        {"id": "y", "role": "research", "prompt": "p", "depends_on": ["x"]},
        {"id": "z", "role": "nobody", "prompt": "p", "depends_on": ["ghost"]},
        {"id": "w", "role": "stuck", "prompt": "p", "model": "anthropic:big"},
    ]
    async with LocalStack(settings, config) as stack, HiveClient(stack.url, settings) as client:
        await client.submit(_plan("bad-plan", plan))
        events = await _events(client, "bad-plan")
    assert len(events) == 1
    rejected = events[0][1]
    assert isinstance(rejected, TaskRejected)
    text = "\n".join(rejected.errors)
    assert "cycle" in text
    assert "unknown role 'nobody'" in text
    assert "unknown sub-task 'ghost'" in text
    assert "does not allow model 'anthropic:big'" in text


async def test_garbage_submission_rejected_not_crashing(tmp_path: Path, settings: Settings) -> None:
    """A submission that is not even a JSON object is answered by `TaskRejected`."""
    config = _config(tmp_path)
    async with LocalStack(settings, config) as stack, HiveClient(stack.url, settings) as client:
        await client.broker.publish(
            b"\xff not json",
            subjects.SUBMIT,
            headers={subjects.MSG_ID_HEADER: "garbage"},
            stream=subjects.TASKS_STREAM,
        )
        events = await _events(client, "garbage")
        await client.submit(_plan("after", DIAMOND[:1]))
        after = await _events(client, "after")
    assert isinstance(events[0][1], TaskRejected)
    assert isinstance(after[-1][1], TaskFinished)


async def test_duplicate_submission_makes_one_task(tmp_path: Path, settings: Settings) -> None:
    """The same task id submitted three times (same and new message ids) runs once."""
    config = _config(tmp_path)
    body = _plan("dup", DIAMOND)
    async with LocalStack(settings, config) as stack, HiveClient(stack.url, settings) as client:
        await client.submit(body)
        await client.submit(body)  # same Nats-Msg-Id: dropped by the stream
        await client.broker.publish(  # another message id: stopped by the KV create-once
            json.dumps({**body, "goal": "a different goal"}).encode(),
            subjects.SUBMIT,
            headers={subjects.MSG_ID_HEADER: "dup-again"},
            stream=subjects.TASKS_STREAM,
        )
        events = await _events(client, "dup")
        js = await jetstream(client.broker)
        # Wait until the orchestrator has settled both stored submissions, then count starts.
        await wait_for(lambda: _acked_submissions(js), expected=2)
        info = await js.stream_info(
            subjects.EVENTS_STREAM, subjects_filter=subjects.events_of("dup")
        )
        _, states, result = await client.status("dup")
    started = [e.subtask_id for _, e in events if isinstance(e, SubTaskStarted)]
    assert sorted(started) == ["a", "b", "c", "d", "e"]
    assert (info.state.subjects or {})["hive.events.dup.subtask_started"] == 5
    assert result is not None
    assert result.status == TaskStatus.COMPLETED
    assert all(s.attempt == 1 for s in states)


async def test_malformed_result_is_terminated_not_retried(
    tmp_path: Path, settings: Settings
) -> None:
    """A result event that fails validation is terminated at once (and logged), never retried.

    Only submissions and work are dead-lettered when they can never be processed: an event that
    breaks its contract is not lost work, and retrying it cannot make it valid.
    """
    config = _config(tmp_path)
    async with LocalStack(settings, config) as stack, HiveClient(stack.url, settings) as client:
        await client.broker.publish(
            {"task_id": "bad-result", "status": "not-a-status"},
            subjects.event("bad-result", subjects.EventKind.SUBTASK_FINISHED),
            stream=subjects.EVENTS_STREAM,
        )
        js = await jetstream(client.broker)
        consumer = subjects.orchestrator_consumer(subjects.EventKind.SUBTASK_FINISHED)

        async def settled() -> int:
            info = await js.consumer_info(subjects.EVENTS_STREAM, consumer)
            return int(info.ack_floor.stream_seq if info.ack_floor else 0)

        await wait_for(settled, 1)
        info = await js.consumer_info(subjects.EVENTS_STREAM, consumer)
        assert (info.num_redelivered, info.num_ack_pending) == (0, 0)
        assert await client.dead_letters() == []
