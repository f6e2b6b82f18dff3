"""The agent service pausing for approvals on a real nats-server (the orchestrator is the test).

A pause publishes its `ApprovalRequested` and acks the work message with no terminal event; a
dispatch carrying the resolutions resumes the run (`SubTaskStarted` again); a delivery that
finds the run still waiting asks again and is acked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from faststream.nats import NatsBroker
from structlog.testing import capture_logs

from hivebus.agent.startup import start_agent
from hivebus.contracts import (
    ApprovalRequested,
    Decision,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskStatus,
    approval_id,
    subjects,
)
from hivebus.contracts.runs import RunCheckpoint, RunPhase
from hivebus.core import Settings

from .approvalkit import resolution
from .test_service import Client, answering, assignment, config_with, wait_until

EMAIL = {"to": "customer@example.com", "subject": "Your refund", "body": "It is on its way."}
SEND = "hivebus.agent.tools.email:send_email"


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    """A connected client of the test's provisioned server."""
    bus = Client(settings)
    await bus.start()
    try:
        yield bus
    finally:
        await bus.broker.stop()


@pytest.fixture
async def agent(tmp_path: Path, settings: Settings, client: Client) -> AsyncIterator[NatsBroker]:
    """An agent of the `writer` role that sends one email (with approval), then answers."""
    assert settings.nats_url is not None
    assert client.js is not None
    script = answering(tmp_path, {"tool": "send_email", "args": EMAIL}, {"text": "sent"})
    config = config_with(tmp_path, script, tools=[SEND], tiers=["read"])
    broker = await start_agent(settings, config, "writer", settings.nats_url)
    try:
        yield broker
    finally:
        await broker.stop()


async def checkpoint(client: Client) -> RunCheckpoint:
    """The run's checkpoint as stored (read only: opening it would take the run over)."""
    assert client.js is not None
    kv = await client.js.key_value(subjects.RUNS_BUCKET)
    entry = await kv.get(subjects.checkpoint_key("t-1", "s-1", 1))
    assert entry.value is not None
    return RunCheckpoint.model_validate_json(entry.value)


async def redeliver(client: Client, work: SubTaskAssigned, name: str) -> None:
    """Put the same assignment on the work stream again, as a redelivery would bring it."""
    assert client.js is not None
    await client.js.publish(
        subjects.work("writer"), work.model_dump_json().encode(), headers={"Nats-Msg-Id": name}
    )


def outbox(tmp_path: Path) -> list[Path]:
    """The emails the agent wrote."""
    return sorted((tmp_path / "workspace" / "outbox").glob("*.eml"))


async def paused_run(client: Client, tmp_path: Path) -> ApprovalRequested:
    """Assign the sub-task and wait until its run paused and the work message was acked."""
    await client.assign(assignment())
    [request] = await wait_until(lambda: client.of_type(ApprovalRequested), "ApprovalRequested")
    await wait_until(client.all_acked, "the paused run's message to be acked")
    assert outbox(tmp_path) == []
    return request


@pytest.mark.usefixtures("agent")
async def test_a_paused_run_asks_acks_and_reports_no_terminal_event(
    tmp_path: Path, client: Client
) -> None:
    """The request is published with its deterministic id; the checkpoint waits; no finish."""
    request = await paused_run(client, tmp_path)
    assert request.approval_id == approval_id("t-1", "s-1", 1, 1, "call_1")
    assert request.pause == [request.approval_id]
    assert client.of_type(SubTaskFinished) == []
    state = await checkpoint(client)
    assert state.phase is RunPhase.AWAITING_APPROVAL
    assert [p.request.approval_id for p in state.approvals] == [request.approval_id]


@pytest.mark.usefixtures("agent")
async def test_a_redelivery_of_a_waiting_run_asks_again_and_is_acked(
    tmp_path: Path, client: Client
) -> None:
    """Found paused with no resolution: the same request is published again; nothing runs."""
    with capture_logs() as logs:
        request = await paused_run(client, tmp_path)
        await redeliver(client, assignment(), "again")
        await wait_until(
            lambda: sum(1 for line in logs if line["event"] == "run_paused") == 2,
            "the second delivery to ask again",
        )
    await wait_until(client.all_acked, "the redelivery to be acked")
    assert client.of_type(SubTaskFinished) == []
    assert len(client.of_type(SubTaskStarted)) == 1  # nothing was resumed
    assert [line["approvals"] for line in logs if line["event"] == "run_paused"] == [
        [request.approval_id]
    ] * 2
    assert outbox(tmp_path) == []


@pytest.mark.usefixtures("agent")
async def test_a_dispatch_with_the_resolution_resumes_the_run_to_its_end(
    tmp_path: Path, client: Client
) -> None:
    """Approved: `SubTaskStarted` again, the email sent once, completed, acked, applied."""
    request = await paused_run(client, tmp_path)
    approved = resolution(request, Decision.APPROVE)
    await client.assign(assignment(resume=[approved]))

    [finished] = await wait_until(lambda: client.of_type(SubTaskFinished), "SubTaskFinished")
    assert (finished.status, finished.output) == (SubTaskStatus.COMPLETED, "sent")
    assert len(client.of_type(SubTaskStarted)) == 2  # the resume is a new start of the run
    await wait_until(client.all_acked, "the resume to be acked")
    assert len(outbox(tmp_path)) == 1
    state = await checkpoint(client)
    assert state.phase is RunPhase.FINISHED
    [approval] = state.approvals
    assert (approval.resolution, approval.applied) == (approved, True)

    await redeliver(client, assignment(resume=[approved]), "resume-again")  # a late duplicate
    await wait_until(client.all_acked, "the duplicate resume to be acked")
    assert len(outbox(tmp_path)) == 1
