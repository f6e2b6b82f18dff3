"""The orchestrator's part of a task's trace: the workflow span, one span per sub-task.

A task's trace id is the client's (the submission's `traceparent`) or derived from the task
id; the workflow span's id is derived from the task id, each sub-task span's from the task
and sub-task ids (`hivebus.core.telemetry.ids`). So any replica, at any time, publishes under
the right span, and the spans are recorded once, when the task finishes, backdated to when
they began: the workflow from acceptance, each sub-task from its first dispatch (kept in its
state while tracing is on). Nothing here does any work when tracing is off.

    invoke_workflow <task>      acceptance -> TaskFinished; status, reason, hivebus.usage.*;
                                a replayed dead letter's task links to the trace it replays
    └── subtask <id>            first dispatch -> its result; every status, blocked included
        └── approval <id>       request -> resolution (recorded when it resolves)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext, TraceFlags

from hivebus.contracts import (
    SUBTASK_TERMINAL,
    ApprovalRecord,
    Decision,
    SubTaskState,
    SubTaskStatus,
    TaskFinished,
    TaskMeta,
    TaskStatus,
    TaskSubmitted,
    Usage,
)
from hivebus.core import telemetry
from hivebus.orchestrator.changes import SubTaskChange
from hivebus.orchestrator.graph import Graph


def trace_ids(submission: TaskSubmitted) -> tuple[int, int | None]:
    """The task's trace id, and the client's span its workflow span is a child of (if any)."""
    client = telemetry.parse_traceparent(submission.traceparent)
    if client is not None:
        return client
    return telemetry.trace_id_for(submission.task_id), None


def workflow_span_id(task_id: str) -> int:
    """The id of a task's `invoke_workflow` span."""
    return telemetry.span_id_for(task_id, "workflow")


def subtask_span_id(task_id: str, subtask_id: str) -> int:
    """The id of a sub-task's span (agents derive the same for a dispatch without context)."""
    return telemetry.span_id_for(task_id, subtask_id, "subtask")


@contextlib.contextmanager
def under(submission: TaskSubmitted, subtask_id: str | None = None) -> Iterator[None]:
    """Publish in this block under the task's workflow span, or under one sub-task's span."""
    made = telemetry.current()
    if not made.enabled:
        yield
        return
    trace_id, _ = trace_ids(submission)
    task_id = submission.task_id
    span_id = (
        workflow_span_id(task_id) if subtask_id is None else subtask_span_id(task_id, subtask_id)
    )
    token = otel_context.attach(made.parent_of(trace_id, span_id))
    try:
        yield
    finally:
        otel_context.detach(token)


def timed(change: SubTaskChange, now: datetime) -> SubTaskChange:
    """`change`, also noting the first dispatch and the result's time while tracing is on."""
    if not telemetry.current().enabled:
        return change

    def stamped(state: SubTaskState | None) -> SubTaskState | None:
        after = change(state)
        if after is None:
            return None
        if after.status is not SubTaskStatus.PENDING and after.dispatched_at is None:
            after = after.model_copy(update={"dispatched_at": now})
        if after.status in SUBTASK_TERMINAL and after.ended_at is None:
            after = after.model_copy(update={"ended_at": now})
        return after

    return stamped


def _replayed(submission: TaskSubmitted) -> list[Link]:
    """A link to the trace a replayed dead letter came from, if this task is a replay."""
    replayed = telemetry.parse_traceparent(submission.replay_of)
    if replayed is None:
        return []
    context = SpanContext(*replayed, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return [Link(context, {"hivebus.link": "dlq_replay"})]


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000_000)


def _usage(usage: Usage) -> dict[str, int | float]:
    return {
        "hivebus.usage.input_tokens": usage.input_tokens,
        "hivebus.usage.output_tokens": usage.output_tokens,
        "hivebus.usage.cost_usd": usage.cost_usd,
        "hivebus.usage.steps": usage.steps,
    }


def record(
    submission: TaskSubmitted,
    graph: Graph,
    states: list[SubTaskState],
    meta: TaskMeta,
    result: TaskFinished,
) -> None:
    """Record the workflow span and every sub-task span of a finished task; count outcomes."""
    made = telemetry.current()
    task_id = submission.task_id
    for state in states:
        spec = graph.specs[state.id]
        made.metrics.subtask_outcomes.add(
            1,
            {
                "hivebus.role": spec.role,
                "hivebus.subtask.kind": spec.kind or "",
                "hivebus.subtask.status": state.status.value,
            },
        )
    made.metrics.task_outcomes.add(1, {"hivebus.task.status": result.status.value})
    if not made.enabled:
        return
    trace_id, client_span = trace_ids(submission)
    workflow = workflow_span_id(task_id)
    end = _ns(result.ts)
    parent: Context | None = (
        made.parent_of(trace_id, client_span) if client_span is not None else None
    )
    made.record_span(
        f"invoke_workflow {task_id}",
        trace_id=trace_id,
        span_id=workflow,
        parent=parent,
        start_ns=_ns(meta.submitted_at),
        end_ns=end,
        attributes={
            "gen_ai.operation.name": "invoke_workflow",
            "hivebus.task.id": task_id,
            "hivebus.task.status": result.status.value,
            "hivebus.task.reason": result.reason,
            "hivebus.task.subtasks": len(states),
            "hivebus.task.degraded": result.degraded,
            **_usage(result.usage),
        },
        error=None if result.status is TaskStatus.COMPLETED else result.reason,
        error_type=None if result.status is TaskStatus.COMPLETED else result.status.value,
        links=_replayed(submission),
    )
    in_workflow = made.parent_of(trace_id, workflow)
    for state in states:
        spec = graph.specs[state.id]
        start = state.dispatched_at or state.ended_at or meta.submitted_at
        failed = state.status is not SubTaskStatus.COMPLETED
        made.record_span(
            f"subtask {state.id}",
            trace_id=trace_id,
            span_id=subtask_span_id(task_id, state.id),
            parent=in_workflow,
            start_ns=_ns(start),
            end_ns=_ns(state.ended_at) if state.ended_at is not None else end,
            attributes={
                "hivebus.task.id": task_id,
                "hivebus.subtask.id": state.id,
                "hivebus.role": spec.role,
                "hivebus.subtask.kind": spec.kind or "",
                "hivebus.subtask.status": state.status.value,
                "hivebus.subtask.reason": state.reason,
                "hivebus.attempts": state.attempt,
                **({"hivebus.subtask.blocked_by": state.blocked_by} if state.blocked_by else {}),
                **_usage(state.usage),
            },
            error=state.reason or state.status.value if failed else None,
            error_type=state.status.value if failed else None,
        )


def record_approval(submission: TaskSubmitted, record: ApprovalRecord) -> None:
    """Record a resolved approval's span under its sub-task's, from request to resolution."""
    made = telemetry.current()
    resolution = record.resolution
    if not made.enabled or resolution is None:
        return
    request = record.request
    trace_id, _ = trace_ids(submission)
    rejected = resolution.decision is Decision.REJECT
    made.record_span(
        f"approval {request.approval_id}",
        trace_id=trace_id,
        span_id=telemetry.span_id_for(request.task_id, request.approval_id, "approval"),
        parent=made.parent_of(trace_id, subtask_span_id(request.task_id, request.subtask_id)),
        start_ns=_ns(request.ts),
        end_ns=_ns(resolution.decided_at),
        attributes={
            "hivebus.task.id": request.task_id,
            "hivebus.subtask.id": request.subtask_id,
            "hivebus.approval.id": request.approval_id,
            "hivebus.approval.kind": request.approval_kind.value,
            "hivebus.approval.tool": request.tool,
            "hivebus.approval.decision": resolution.decision.value,
            "hivebus.approval.by": resolution.by,
            "hivebus.approval.timed_out": resolution.timed_out,
            "hivebus.attempt": request.attempt,
        },
        error=resolution.reason or "rejected" if rejected else None,
        error_type="rejected" if rejected else None,
    )
