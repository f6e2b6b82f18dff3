"""Contents over the server's 1 MB `max_payload` travel by reference, never by retry.

A real nats-server at its default limit, the whole stack in-process: a 1.5 MB answer, a
`TaskFinished` over the limit, and a content the object store refuses.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hivetest import write_config, write_script
from pydantic import BaseModel

from hivebus.agent.answers import DEPENDENCY_CHARS
from hivebus.console.client import HiveClient
from hivebus.console.stack import LocalStack
from hivebus.contracts import (
    RunCheckpoint,
    StepRecorded,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskStatus,
    TaskFinished,
    TaskMeta,
    TaskStatus,
    subjects,
)
from hivebus.contracts.knowledge import task_folder
from hivebus.core import HivebusConfig, Publisher, Settings, jetstream
from hivebus.core.artifacts import PREVIEW_CHARS

pytestmark = pytest.mark.e2e

WAIT_S = 60.0
"""Bound on following one task to its end."""

BIG = 1_500_000
"""An answer half again the server's default `max_payload`."""

SMALL_USAGE = {"input_tokens": 10, "output_tokens": 10}
"""Scripted usage, so a long answer does not count as a million tokens against the limits."""


SMALL_BUS_BYTES = 200_000
"""What a bus made small takes per message (see `small_bus`)."""


def _config(tmp_path: Path, answer: str) -> HivebusConfig:
    script = write_script(tmp_path, "answer.yaml", [{"text": answer, "usage": SMALL_USAGE}])
    reads = write_script(tmp_path, "reader.yaml", [{"text": "read it", "usage": SMALL_USAGE}])
    return write_config(
        tmp_path,
        {
            "writer": {"system": "You write.", "model": script},
            "reader": {"system": "You read.", "model": reads},
        },
    )


@pytest.fixture
def small_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every publisher of the process sends at most `SMALL_BUS_BYTES` per message.

    A run's checkpoint holds its answer about three times and must fit the server's real
    1 MB, so an answer over a real 1 MB cannot be checkpointed (yet): these tests make the
    bus smaller instead of the answer larger.
    """

    async def budget(_publisher: Publisher) -> int:
        return SMALL_BUS_BYTES

    monkeypatch.setattr(Publisher, "payload_budget", budget)


def _plan(task_id: str, count: int) -> dict[str, Any]:
    subtasks = [{"id": f"s{n}", "role": "writer", "prompt": "write"} for n in range(count)]
    return {"task_id": task_id, "goal": "write at length", "plan": {"subtasks": subtasks}}


async def _follow(client: HiveClient, task_id: str) -> list[BaseModel]:
    async with asyncio.timeout(WAIT_S):
        return [event async for _, event in client.follow(task_id)]


async def _summary_note(root: Path, task_id: str) -> str:
    """The task's summary note in the knowledge repository, waited for (bounded)."""
    path = root / task_folder(task_id) / "summary.md"
    async with asyncio.timeout(WAIT_S):
        while not path.is_file():  # noqa: ASYNC110 - a file another process writes
            await asyncio.sleep(0.05)
    return path.read_text(encoding="utf-8")


async def _closed_meta(client: HiveClient, task_id: str) -> TaskMeta:
    """The task's meta once the orchestrator closed it (bounded)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            meta, _, _ = await client.status(task_id)
            if meta is not None and meta.status != TaskStatus.RUNNING:
                return meta
            await asyncio.sleep(0.05)


def _text(size: int) -> str:
    line = "All work and no play makes a long answer.\n"
    return (line * (size // len(line) + 1))[:size]


async def test_big_answer_completes_by_reference_with_one_model_call(
    tmp_path: Path, settings: Settings
) -> None:
    """A 1.5 MB answer ends `completed` after one model call, its output whole in `artifacts`."""
    answer = _text(BIG)
    config = _config(tmp_path, answer)
    async with LocalStack(settings, config) as stack, HiveClient(stack.url, settings) as client:
        await client.submit(_plan("big-answer", 1))
        events = await _follow(client, "big-answer")
        finished = [e for e in events if isinstance(e, SubTaskFinished)]
        assert len(finished) == 1
        assert finished[0].output_ref is not None
        assert json.loads(await client.artifact(finished[0].output_ref)) == answer
    assert finished[0].status == SubTaskStatus.COMPLETED
    assert finished[0].output == answer[:PREVIEW_CHARS]
    steps = [e for e in events if isinstance(e, StepRecorded) and e.step_kind == "model"]
    assert len(steps) == 1
    assert steps[0].content_ref is not None
    assert len([e for e in events if isinstance(e, SubTaskStarted)]) >= 1
    result = events[-1]
    assert isinstance(result, TaskFinished)
    assert result.status == TaskStatus.COMPLETED


async def test_big_task_result_is_published_by_reference_and_followed_whole(
    tmp_path: Path, settings: Settings
) -> None:
    """A `TaskFinished` over the limit travels with `result_ref`; `follow` gives it back whole."""
    answer = _text(20_000)
    config = _config(tmp_path, answer)
    async with LocalStack(settings, config) as stack, HiveClient(stack.url, settings) as client:
        await client.submit(_plan("big-result", 60))
        events = await _follow(client, "big-result")
        js = await jetstream(client.broker)
        subject = subjects.event("big-result", subjects.EventKind.TASK_FINISHED)
        raw = await js.get_last_msg(subjects.EVENTS_STREAM, subject)
        note = await _summary_note(stack.knowledge_root(), "big-result")
        meta = await _closed_meta(client, "big-result")
    # The summary note of a result by reference is written, naming where the whole one is,
    # and the task is closed (a preview for an output once made this step fail for ever).
    assert subjects.artifact_name("big-result", "result.json") in note
    assert "## Output (preview)" in note
    assert meta.status == TaskStatus.COMPLETED
    published = TaskFinished.model_validate_json(raw.data or b"")
    assert published.result_ref == subjects.artifact_name("big-result", "result.json")
    assert published.status == TaskStatus.COMPLETED
    assert published.subtasks == []
    assert isinstance(published.output, str)
    assert len(published.output) == PREVIEW_CHARS
    result = events[-1]
    assert isinstance(result, TaskFinished)
    assert result.result_ref is None
    assert result.status == TaskStatus.COMPLETED
    assert result.output == {f"s{n}": answer for n in range(60)}
    assert [s.status for s in result.subtasks] == [SubTaskStatus.COMPLETED] * 60
    assert all(s.output == answer for s in result.subtasks)


@pytest.mark.usefixtures("small_bus")
async def test_unstorable_answer_ends_the_run_once_saying_why(
    tmp_path: Path, settings: Settings
) -> None:
    """An answer too large for the bus that the store refuses ends `failed` once, not dead-lettered.

    The `artifacts` bucket has room for 64 KB: the 250 KB answer can neither travel nor be stored.
    A delivery that a loaded machine makes again ends the same way, under the same message id.
    """
    config = _config(tmp_path, _text(250_000))
    async with LocalStack(settings, config) as stack, HiveClient(stack.url, settings) as client:
        js = await jetstream(client.broker)
        info = await js.stream_info(f"OBJ_{subjects.ARTIFACTS_BUCKET}")
        info.config.max_bytes = 64 * 1024
        await js.update_stream(info.config)
        await client.submit(_plan("unstorable", 1))
        events = await _follow(client, "unstorable")
        consumer = await js.consumer_info(subjects.WORK_STREAM, subjects.agent_consumer("writer"))
        letters = await client.dead_letters()
    finished = [e for e in events if isinstance(e, SubTaskFinished)]
    assert len(finished) == 1
    assert finished[0].status == SubTaskStatus.FAILED
    assert "could not be stored" in finished[0].reason  # the checkpoint holding the answer
    assert finished[0].output is None
    assert finished[0].output_ref is None
    assert len([e for e in events if isinstance(e, SubTaskStarted)]) >= 1
    result = events[-1]
    assert isinstance(result, TaskFinished)
    assert result.status == TaskStatus.FAILED
    assert (consumer.num_ack_pending, consumer.num_pending) == (0, 0)
    assert letters == []


@pytest.mark.usefixtures("small_bus")
async def test_dependent_reads_a_referenced_output_whole_up_to_its_bound(
    tmp_path: Path, settings: Settings
) -> None:
    """An output passed by reference is inlined whole in its dependent's prompt, up to a bound."""
    answer = _text(250_000)
    config = _config(tmp_path, answer)
    plan = {
        "task_id": "by-ref",
        "goal": "write, then read",
        "plan": {
            "subtasks": [
                {"id": "w", "role": "writer", "prompt": "write"},
                {"id": "r", "role": "reader", "prompt": "read", "depends_on": ["w"]},
            ]
        },
    }
    async with LocalStack(settings, config) as stack, HiveClient(stack.url, settings) as client:
        await client.submit(plan)
        events = await _follow(client, "by-ref")
        runs = await (await jetstream(client.broker)).key_value(subjects.RUNS_BUCKET)
        entry = await runs.get(subjects.checkpoint_key("by-ref", "r", 1))
        stored = RunCheckpoint.model_validate_json(entry.value or b"").stored_ref
        whole = await client.artifact(stored) if stored else b""
    written = next(e for e in events if isinstance(e, SubTaskFinished) and e.subtask_id == "w")
    assert written.output_ref is not None
    checkpoint = RunCheckpoint.model_validate_json(entry.value or b"")
    if checkpoint.stored_ref is not None:  # too large for the (small) bus: kept by reference
        checkpoint = RunCheckpoint.model_validate_json(whole)
    prompt = checkpoint.messages[0].text or ""
    assert answer[:DEPENDENCY_CHARS] in prompt
    assert f"cut here: {DEPENDENCY_CHARS} of {len(answer)} characters" in prompt
    result = events[-1]
    assert isinstance(result, TaskFinished)
    assert result.status == TaskStatus.COMPLETED
