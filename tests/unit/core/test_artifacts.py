"""Large contents by reference: the small version of a message, the store, the publisher.

The small versions are pure; the store and the publisher run against the test's real
nats-server (default `max_payload`, 1 MB) with the topology provisioned.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from pydantic import BaseModel

from hivebus.contracts import (
    DeadLetter,
    StepRecorded,
    SubTaskFinished,
    SubTaskStatus,
    SubTaskSummary,
    TaskFinished,
    TaskStatus,
    Usage,
    subjects,
)
from hivebus.core import Publisher, Settings, jetstream, new_broker
from hivebus.core.artifacts import (
    PREVIEW_CHARS,
    ArtifactNotFoundError,
    ArtifactRefusedError,
    Artifacts,
    PayloadTooLargeError,
    offload,
)
from hivebus.core.settle import Settlement, settlement_for
from hivebus.core.topology import provision

MB = 1024 * 1024
BUDGET = MB - 4096


def _finished(output: Any, status: SubTaskStatus = SubTaskStatus.COMPLETED) -> SubTaskFinished:
    return SubTaskFinished(
        task_id="t1",
        subtask_id="s1",
        attempt=2,
        run_id="run9",
        role="writer",
        status=status,
        reason="final answer given",
        output=output,
        usage=Usage(steps=1),
    )


def _summary(n: int, status: SubTaskStatus, output: Any = None) -> SubTaskSummary:
    return SubTaskSummary(
        id=f"s{n}", role="writer", status=status, reason=f"reason {n}", output=output
    )


def _task_finished(subtasks: list[SubTaskSummary], output: Any) -> TaskFinished:
    return TaskFinished(
        task_id="t1",
        status=TaskStatus.PARTIAL,
        reason="some sub-tasks did not complete",
        degraded=True,
        output=output,
        usage=Usage(steps=len(subtasks), input_tokens=7),
        subtasks=subtasks,
    )


def _body(message: BaseModel) -> bytes:
    return message.model_dump_json().encode()


# -- the small version (pure) ----------------------------------------------------------


def test_subtask_finished_keeps_a_preview_and_stores_the_output_whole() -> None:
    """A big `SubTaskFinished` stores its output as JSON, named by attempt, and keeps a preview."""
    output = "x" * (2 * MB)
    event = _finished(output)
    small = offload(event, _body(event), BUDGET)
    assert small is not None
    assert small.name == "t1/s1/2/output.json"
    assert json.loads(small.content) == output
    assert isinstance(small.message, SubTaskFinished)
    assert small.message.output_ref == small.name
    assert small.message.output == output[:PREVIEW_CHARS]
    assert small.message.status is SubTaskStatus.COMPLETED
    assert small.message.event_id == event.event_id
    assert len(_body(small.message)) < 10_000


def test_structured_output_preview_is_the_beginning_of_its_json() -> None:
    """A structured output's preview is the start of its JSON text; the store keeps the value."""
    output = {"rows": [{"n": n, "text": "y" * 100} for n in range(20_000)]}
    event = _finished(output)
    small = offload(event, _body(event), BUDGET)
    assert small is not None
    assert json.loads(small.content) == output
    assert isinstance(small.message, SubTaskFinished)
    assert small.message.output == json.dumps(output)[:PREVIEW_CHARS]


def test_step_record_stores_input_and_output_and_keeps_previews() -> None:
    """A big `StepRecorded` stores `{input, output}` per run and step, keeps previews of both."""
    step = StepRecorded(
        task_id="t1",
        subtask_id="s1",
        attempt=1,
        run_id="run9",
        step=3,
        step_kind="model",
        name="scripted:x",
        input={"messages": 2},
        output={"text": "z" * (2 * MB)},
    )
    small = offload(step, _body(step), BUDGET)
    assert small is not None
    assert small.name == "t1/s1/1/step-run9-3.json"
    assert json.loads(small.content) == {"input": step.input, "output": step.output}
    assert isinstance(small.message, StepRecorded)
    assert small.message.content_ref == small.name
    assert small.message.input == json.dumps(step.input)
    assert small.message.output == json.dumps(step.output)[:PREVIEW_CHARS]


def test_task_finished_keeps_what_did_not_complete_without_outputs() -> None:
    """A big `TaskFinished` is stored whole; the small one keeps its status, not what completed."""
    big = "o" * 30_000
    subtasks = [_summary(n, SubTaskStatus.COMPLETED, big) for n in range(60)]
    subtasks += [_summary(100, SubTaskStatus.FAILED, big), _summary(101, SubTaskStatus.BLOCKED)]
    event = _task_finished(subtasks, {s.id: big for s in subtasks[:60]})
    body = _body(event)
    small = offload(event, body, BUDGET)
    assert small is not None
    assert small.name == "t1/result.json"
    assert small.content == body
    assert isinstance(small.message, TaskFinished)
    assert small.message.result_ref == small.name
    assert (small.message.status, small.message.reason) == (event.status, event.reason)
    assert (small.message.degraded, small.message.usage) == (True, event.usage)
    assert [s.id for s in small.message.subtasks] == ["s100", "s101"]
    assert all(s.output is None for s in small.message.subtasks)
    assert small.message.subtasks[0].reason == "reason 100"
    assert small.message.output == json.dumps(event.output)[:PREVIEW_CHARS]


def test_task_finished_keeps_only_the_summaries_that_fit() -> None:
    """Of 5,000 failed sub-tasks, the small `TaskFinished` keeps as many as fit in the budget."""
    subtasks = [_summary(n, SubTaskStatus.FAILED) for n in range(5000)]
    event = _task_finished(subtasks, None)
    small = offload(event, _body(event), 100_000)
    assert small is not None
    assert isinstance(small.message, TaskFinished)
    kept = small.message.subtasks
    assert 100 < len(kept) < 5000
    assert [s.id for s in kept] == [s.id for s in subtasks[: len(kept)]]
    assert len(_body(small.message)) <= 100_000


def test_other_messages_have_no_small_version() -> None:
    """A dead letter cannot be passed by reference: `offload` says so with None."""
    letter = DeadLetter(task_id="t1", why="unrecoverable", original="x" * (2 * MB))
    assert offload(letter, _body(letter), BUDGET) is None


def test_payload_errors_are_never_retried() -> None:
    """A payload too large, or refused by the store, terminates instead of being redelivered."""
    for error in (PayloadTooLargeError("big"), ArtifactRefusedError("refused")):
        assert settlement_for(error) is Settlement.TERM


# -- on a real server --------------------------------------------------------------------


@pytest.fixture
async def broker(settings: Settings) -> AsyncIterator[NatsBroker]:
    """A connected broker on the test's provisioned server."""
    assert settings.nats_url is not None
    bus = new_broker(settings.nats_url, "test-artifacts", settings)
    await provision(await jetstream(bus), settings, [])
    try:
        yield bus
    finally:
        await bus.stop()


async def _stored(js: JetStreamContext, subject: str) -> dict[str, Any]:
    raw = await js.get_last_msg(subjects.EVENTS_STREAM, subject)
    assert raw.data is not None
    value: dict[str, Any] = json.loads(raw.data)
    return value


async def test_store_round_trip_overwrites_by_name(broker: NatsBroker) -> None:
    """`put` then `get` gives the bytes back (3 MB, many chunks); a second `put` replaces them."""
    artifacts = Artifacts(await jetstream(broker))
    data = bytes(range(256)) * (3 * MB // 256)
    await artifacts.put("t1/s1/1/output.json", data)
    assert await artifacts.get("t1/s1/1/output.json") == data
    await artifacts.put("t1/s1/1/output.json", b'"again"')
    assert await artifacts.get_json("t1/s1/1/output.json") == "again"
    with pytest.raises(ArtifactNotFoundError):
        await artifacts.get("t1/nothing.json")


async def test_store_refuses_over_its_object_bound(broker: NatsBroker) -> None:
    """A content over the object bound is refused, not retryable, saying it was not stored."""
    artifacts = Artifacts(await jetstream(broker), max_object_bytes=1000)
    with pytest.raises(ArtifactRefusedError, match="could not be stored") as caught:
        await artifacts.put("t1/big.json", b"x" * 1001)
    assert not caught.value.retryable


async def test_store_full_is_refused_for_good(broker: NatsBroker) -> None:
    """A bucket without room left refuses the content for good (the server's limit, not a blip)."""
    js = await jetstream(broker)
    info = await js.stream_info(f"OBJ_{subjects.ARTIFACTS_BUCKET}")
    config: StreamConfig = info.config
    config.max_bytes = 256 * 1024
    await js.update_stream(config)
    with pytest.raises(ArtifactRefusedError, match="could not be stored"):
        await Artifacts(js).put("t1/big.json", b"x" * (MB // 2))


async def test_publisher_sends_a_big_result_by_reference(broker: NatsBroker) -> None:
    """A 2 MB `SubTaskFinished` is published small, with `output_ref`; the store has it whole."""
    js = await jetstream(broker)
    output = "w" * (2 * MB)
    await Publisher(broker, 5.0).publish(_finished(output))
    stored = await _stored(js, subjects.event("t1", subjects.EventKind.SUBTASK_FINISHED))
    assert stored["output_ref"] == "t1/s1/2/output.json"
    assert stored["output"] == output[:PREVIEW_CHARS]
    assert await Artifacts(js).get_json(stored["output_ref"]) == output


async def test_publisher_sends_small_messages_inline(broker: NatsBroker) -> None:
    """A message under the limit goes as it is, as JSON, with its message id; nothing is stored."""
    js = await jetstream(broker)
    await Publisher(broker, 5.0).publish(_finished("short"))
    subject = subjects.event("t1", subjects.EventKind.SUBTASK_FINISHED)
    raw = await js.get_last_msg(subjects.EVENTS_STREAM, subject)
    assert raw.headers is not None
    assert raw.headers["content-type"] == "application/json"
    assert raw.headers[subjects.MSG_ID_HEADER]
    assert SubTaskFinished.model_validate_json(raw.data or b"").output == "short"
    with pytest.raises(ArtifactNotFoundError):
        await Artifacts(js).get("t1/s1/2/output.json")


async def test_publisher_refuses_what_cannot_go_by_reference(broker: NatsBroker) -> None:
    """A too-large message of a kind without a small version raises, naming kind, size and limit."""
    letter = DeadLetter(task_id="t1", why="unrecoverable", original="x" * (2 * MB))
    with pytest.raises(PayloadTooLargeError, match=r"DeadLetter of \d+ bytes .* limit of \d+"):
        await Publisher(broker, 5.0).publish(letter)


async def test_publisher_reports_a_store_that_refuses(broker: NatsBroker) -> None:
    """When the store refuses the big part, the publish fails for good and publishes nothing."""
    js = await jetstream(broker)
    publisher = Publisher(broker, 5.0, artifacts=Artifacts(js, max_object_bytes=MB))
    with pytest.raises(ArtifactRefusedError, match="could not be stored"):
        await publisher.publish(_finished("v" * (2 * MB)))
    info = await js.stream_info(subjects.EVENTS_STREAM)
    assert info.state.messages == 0
