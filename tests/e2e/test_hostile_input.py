"""Input as a hostile client sends it: answered on the first delivery, nothing retried forever."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from hivetest import write_config
from nats.js import JetStreamContext

from hivebus.contracts import DeadLetter, TaskRejected, subjects
from hivebus.core import EmbeddedNats, Settings
from hivebus.core.topology import provision
from hivebus.orchestrator.service import start_orchestrator

pytestmark = pytest.mark.e2e

DEEP = b"[" * 5000 + b"]" * 5000


@pytest.fixture
async def js(
    tmp_path: Path, settings: Settings, nats_server: EmbeddedNats
) -> AsyncIterator[JetStreamContext]:
    """A raw nats-py client (as any client in any language) and a running orchestrator."""
    config = write_config(tmp_path, {"writer": {"system": "s", "model": "scripted:w.yaml"}})
    client = await nats.connect(nats_server.url)
    context = client.jetstream()
    await provision(context, settings, ["writer"])
    broker = await start_orchestrator(settings, config, nats_server.url)
    try:
        yield context
    finally:
        await broker.stop()
        await client.close()


async def _first(js: JetStreamContext, subject: str) -> bytes:
    sub = await js.subscribe(subject, ordered_consumer=True)
    try:
        message = await sub.next_msg(timeout=10)
    finally:
        await sub.unsubscribe()
    return bytes(message.data)


async def _unsettled(js: JetStreamContext) -> int:
    info = await js.consumer_info(subjects.TASKS_STREAM, subjects.ORCHESTRATOR_SUBMIT_CONSUMER)
    return int(info.num_ack_pending + info.num_redelivered + info.num_pending)


DEEP_FIELD = json.dumps({"task_id": "deep", "goal": "g"}).encode()[:-1] + b', "x": ' + DEEP + b"}"


@pytest.mark.parametrize("body", [DEEP, DEEP_FIELD], ids=["deep-array", "deep-field"])
async def test_a_submission_nested_too_deeply_is_rejected_at_once(
    body: bytes, js: JetStreamContext
) -> None:
    """A 5,000-deep submission gets a `TaskRejected` saying so, and is settled, not retried."""
    await js.publish(subjects.SUBMIT, body, headers={subjects.MSG_ID_HEADER: "deep"}, timeout=5)
    subject = subjects.event("deep", subjects.EventKind.TASK_REJECTED)
    rejected = TaskRejected.model_validate_json(await _first(js, subject))
    assert any("nested more than" in error for error in rejected.errors), rejected
    async with asyncio.timeout(10):
        while await _unsettled(js):  # noqa: ASYNC110 - a server-side count has no event
            await asyncio.sleep(0.05)


async def test_a_submission_with_no_task_id_is_dead_lettered(js: JetStreamContext) -> None:
    """Nobody can be answered: the submission goes to the DLQ with why, on its first delivery."""
    await js.publish(subjects.SUBMIT, DEEP, timeout=5)
    dlq = subjects.dead_letter(subjects.DeadLetterKind.UNRECOVERABLE)
    letter = DeadLetter.model_validate_json(await _first(js, dlq))
    assert letter.task_id == "unknown"
    assert "names no valid task id" in letter.errors[0]
    assert "nested more than" in letter.errors[0]
    assert letter.deliveries == 1
