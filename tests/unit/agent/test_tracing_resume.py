"""Run spans across deliveries: a resumed run is a new span linked to the one it resumes.

A worker that stops mid-run leaves its run span unended (never exported) and its record in
the checkpoint; the delivery that resumes records it, ended then, failed "interrupted", and
links to it. A pause for approvals ends the span normally; the resume links to it.
"""

from __future__ import annotations

from pathlib import Path

from opentelemetry.trace import StatusCode

from hivebus.agent.tool import tool
from hivebus.agent.tracing import INTERRUPTED
from hivebus.contracts import ApprovalRequested, Decision, SubTaskStatus, Tier
from hivebus.core import telemetry

from .approvalkit import resolution
from .fakes import Traced
from .test_tracing import (
    KIND,
    ROLE,
    SUBTASK,
    SUBTASK_SPAN,
    TASK,
    TRACE,
    Worker,
    answering,
    assignment,
    echo,
    parent_id,
    span_id,
)


@tool(tier="write_risky")
def send(to: str) -> str:
    """Send a message to `to` (needs a person's approval)."""
    return f"sent to {to}"


async def test_a_run_resumed_after_its_worker_stopped_records_the_span_it_resumes(
    tmp_path: Path, traced: Traced
) -> None:
    """The dead worker's span is recorded with its own ids and start, and the new one links it."""
    route = answering(tmp_path, {"tool": "echo", "args": {"text": "hi"}}, {"text": "done"})
    worker = Worker(tmp_path, route, [echo])
    worker.runs.refuse_write = 2  # the save after the tool call: the bus is gone
    first = await worker.deliver()
    assert first.settled == ["nak"]
    assert traced.named("invoke_agent ") == []  # left for the delivery that takes over
    stored = worker.checkpoint().trace
    assert stored is not None
    assert not stored.ended
    ids = telemetry.parse_traceparent(stored.traceparent)
    assert ids is not None
    assert ids[0] == TRACE
    first_chat = traced.one("chat ")
    assert parent_id(first_chat) == ids[1]

    again = await worker.deliver(delivered=2)
    assert again.settled == ["ack"]
    assert worker.finished().status is SubTaskStatus.COMPLETED
    interrupted, resumed = traced.named("invoke_agent ")
    assert interrupted.context is not None
    assert (interrupted.context.trace_id, interrupted.context.span_id) == ids
    assert interrupted.start_time == stored.start_ns
    assert parent_id(interrupted) == SUBTASK_SPAN
    assert interrupted.status.status_code is StatusCode.ERROR
    assert interrupted.status.description == INTERRUPTED
    assert (interrupted.attributes or {})["hivebus.run.status"] == "interrupted"
    assert (interrupted.attributes or {})["hivebus.subtask.kind"] == KIND

    assert parent_id(resumed) == SUBTASK_SPAN  # a child of the sub-task, not of the dead run
    [link] = resumed.links
    assert (link.context.trace_id, link.context.span_id) == ids
    assert (resumed.attributes or {})["hivebus.run.status"] == "completed"
    later = [s for s in traced.spans if s.name.startswith(("chat ", "execute_tool "))][2:]
    assert later
    assert {parent_id(s) for s in later} == {span_id(resumed)}
    assert len(traced.named("queue_wait ")) == 1  # a redelivery's wait is not the stream's
    final = worker.checkpoint().trace
    assert final is not None
    assert final.ended
    assert telemetry.parse_traceparent(final.traceparent) == (TRACE, span_id(resumed))


async def test_a_run_that_stops_before_any_save_ends_its_own_span(
    tmp_path: Path, traced: Traced
) -> None:
    """No checkpoint kept the span's record, so nobody else can: it ends here, failed."""
    route = answering(tmp_path, {"tool": "echo", "args": {"text": "hi"}}, {"text": "done"})
    worker = Worker(tmp_path, route, [echo])
    worker.runs.refuse_write = 1
    assert (await worker.deliver()).settled == ["nak"]

    run = traced.one("invoke_agent ")
    assert run.status.status_code is StatusCode.ERROR
    assert (run.attributes or {})["hivebus.run.status"] == "interrupted"
    assert (run.attributes or {})["error.type"] == "CheckpointUnavailableError"
    assert parent_id(traced.one("chat ")) == span_id(run)


async def test_a_pause_for_approval_ends_the_span_and_the_resume_links_to_it(
    tmp_path: Path, traced: Traced
) -> None:
    """awaiting_approval is a normal end with one event per request; the resume is a new span."""
    route = answering(tmp_path, {"tool": "send", "args": {"to": "bob"}}, {"text": "sent"})
    worker = Worker(tmp_path, route, [send], approve=[Tier.WRITE_RISKY])
    assert (await worker.deliver()).settled == ["ack"]
    [request] = [e for e in worker.sink.side if isinstance(e, ApprovalRequested)]

    paused = traced.one("invoke_agent ")
    assert paused.status.status_code is StatusCode.UNSET
    assert (paused.attributes or {})["hivebus.run.status"] == "awaiting_approval"
    [event] = paused.events
    assert event.name == "approval_requested"
    assert dict(event.attributes or {}) == {
        "hivebus.approval.id": request.approval_id,
        "hivebus.approval.kind": "tool_call",
        "gen_ai.tool.name": "send",
        "hivebus.approval.asked_again": False,
    }
    stored = worker.checkpoint().trace
    assert stored is not None
    assert stored.ended  # folded into the pause's own save
    assert traced.points("hivebus.approvals.requested") == [
        (
            {
                "hivebus.approval.kind": "tool_call",
                "hivebus.role": ROLE,
                "hivebus.subtask.kind": KIND,
            },
            1,
        )
    ]
    [(paused_run, _)] = traced.points("gen_ai.invoke_agent.duration")
    assert paused_run["hivebus.run.status"] == "awaiting_approval"
    assert traced.points("hivebus.run.steps") == []  # only a finished run counts its steps

    await worker.deliver(assignment(resume=[resolution(request, Decision.APPROVE)]))
    assert worker.finished().status is SubTaskStatus.COMPLETED
    first, resumed = traced.named("invoke_agent ")  # nothing recorded as interrupted
    assert span_id(first) == span_id(paused)
    [link] = resumed.links
    assert link.context.span_id == span_id(paused)
    assert (resumed.attributes or {})["hivebus.run.status"] == "completed"
    assert parent_id(traced.one("execute_tool send")) == span_id(resumed)
    assert len(traced.named("queue_wait ")) == 2  # each dispatch waited in the stream


async def test_a_dispatch_without_trace_context_joins_the_task_trace_by_derived_ids(
    tmp_path: Path, traced: Traced
) -> None:
    """No `traceparent`: the sub-task's span by its derived ids is the parent (the task's trace)."""
    await Worker(tmp_path, answering(tmp_path, {"text": "done"})).deliver(headers={})
    for name in ("queue_wait ", "invoke_agent "):
        span = traced.one(name)
        assert span.context is not None
        assert span.context.trace_id == telemetry.trace_id_for(TASK)
        assert parent_id(span) == telemetry.span_id_for(TASK, SUBTASK, "subtask")
