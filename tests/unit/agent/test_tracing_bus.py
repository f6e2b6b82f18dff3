"""The agent's spans on a real nats-server: the dispatch's headers parent them.

The test publishes the assignment with the sub-task's span current (as the orchestrator does),
so the work message's `traceparent` names it; the queue wait is measured from the message's
real JetStream timestamp; what the run publishes carries its run span.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.msg import Msg
from opentelemetry import context as otel_context

from hivebus.agent.startup import start_agent
from hivebus.contracts import SubTaskFinished, subjects
from hivebus.core import Settings, telemetry

from .fakes import Traced
from .test_service import Client, answering, assignment, config_with, wait_until
from .test_tracing import parent_id, span_id

TASK, SUBTASK, ROLE = "t-1", "s-1", "writer"
TRACE = telemetry.trace_id_for(TASK)
SUBTASK_SPAN = telemetry.span_id_for(TASK, SUBTASK, "subtask")


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    """A connected client of the test's provisioned server."""
    bus = Client(settings)
    await bus.start()
    try:
        yield bus
    finally:
        await bus.broker.stop()


async def test_a_dispatch_on_the_bus_parents_the_agent_spans_and_its_events_carry_the_run(
    tmp_path: Path,
    settings: Settings,
    client: Client,
    traced: Traced,
) -> None:
    """queue_wait and invoke_agent are children of the dispatch's span; events carry the run's."""
    assert settings.nats_url is not None
    config = config_with(tmp_path, answering(tmp_path, {"text": "hi there"}))
    agent = await start_agent(settings, config, ROLE, settings.nats_url)
    try:
        await _dispatch_and_check(client, traced)
    finally:
        await agent.stop()


async def _dispatch_and_check(client: Client, traced: Traced) -> None:
    headers: dict[str, dict[str, str]] = {}

    async def keep(msg: Msg) -> None:
        headers[json.loads(msg.data)["kind"]] = dict(msg.headers or {})

    await (await client.broker.connect()).subscribe(subjects.EVENTS_ALL, cb=keep)
    token = otel_context.attach(telemetry.parent(TRACE, SUBTASK_SPAN))
    try:
        await client.assign(assignment(subtask_kind="greeting"))
    finally:
        otel_context.detach(token)

    [finished] = await wait_until(lambda: client.of_type(SubTaskFinished), "SubTaskFinished")
    assert finished.subtask_kind == "greeting"
    run = await wait_until(lambda: traced.named("invoke_agent "), "the run span")
    wait, [run_span], chat = traced.one("queue_wait "), run, traced.one("chat ")
    for span in (wait, run_span):
        assert span.context is not None
        assert span.context.trace_id == TRACE
        assert parent_id(span) == SUBTASK_SPAN
    assert wait.end_time is not None
    assert run_span.start_time is not None
    assert wait.end_time <= run_span.start_time
    assert parent_id(chat) == span_id(run_span)
    assert (run_span.attributes or {})["hivebus.subtask.kind"] == "greeting"

    await wait_until(lambda: "subtask_started" in headers, "SubTaskStarted's headers")
    started = telemetry.parse_traceparent(headers["subtask_started"].get("traceparent"))
    assert started == (TRACE, span_id(run_span))  # published inside the run span
