"""`invoke_agent <role>`: one span per run, that is per delivery that runs the loop.

    starts      a child of the current context (the sub-task's span); its ids and start go
                into the checkpoint (`RunCheckpoint.trace`), saved with the run's next save
    resumes     a checkpoint that holds an earlier delivery's run span: the new span links to
                it; when that span never ended (its worker stopped), it is recorded first,
                with its own ids, start and parent, ended now, failed "interrupted", so the
                link never points at nothing
    each save   the record says `ended` when the save is the run's last (phase
                `awaiting_approval` or `finished`): no extra write
    pauses      ends normally, `hivebus.run.status` = `awaiting_approval`, one
                `approval_requested` event per request
    finishes    status error unless `completed`; the run's usage as `hivebus.usage.*` (never
                `gen_ai.usage.*`: that is the chat spans')
    escapes     fenced, bus down or cancelled after a save carried its record: left unended,
                for the delivery that takes the run over to record; otherwise ended failed

Metrics: `gen_ai.invoke_agent.duration`, and at a terminal event `hivebus.run.steps` and
`hivebus.limit.exceeded`; at a pause `hivebus.approvals.requested` per new request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextvars import Token
from types import TracebackType
from typing import Self

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags

from hivebus.agent.approvals import RunPaused
from hivebus.agent.checkpoint import CheckpointUnavailableError, RunFencedError
from hivebus.agent.tracing.labels import (
    ERROR_TYPE,
    KIND,
    OPERATION,
    PROVIDER,
    REQUEST_MODEL,
    ROLE,
    model_of,
    provider_of,
)
from hivebus.contracts import SubTaskAssigned, SubTaskFinished, SubTaskStatus, Usage
from hivebus.contracts.runs import RunCheckpoint, RunPhase, RunTrace
from hivebus.core import telemetry

Save = Callable[[RunCheckpoint], Awaitable[None]]

INTERRUPTED = "interrupted: the worker stopped before the run ended"
"""The error of a run span recorded by the delivery after the one whose worker stopped."""

STATUS = "hivebus.run.status"
LAST_SAVES = frozenset({RunPhase.AWAITING_APPROVAL, RunPhase.FINISHED})
LEFT_TO_RESUMER = (RunFencedError, CheckpointUnavailableError, asyncio.CancelledError)
"""Ways out after which another delivery takes the run over (and records this span)."""


class RunSpan:
    """What a run tells its span; this one records nothing (telemetry is off)."""

    def saving(self, save: Save) -> Save:
        """The checkpoint writer the run uses: `save`, keeping the span's record up to date."""
        return save

    def paused(self, paused: RunPaused) -> None:
        """The run waits for people: the span ends."""

    def finished(self, finished: SubTaskFinished) -> None:
        """The run's terminal event is decided (and saved): the span ends."""

    def __enter__(self) -> Self:
        """Make the span current (children: the run's model and tool calls)."""
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop making it current; end it if the run left another way."""


NO_RUN = RunSpan()


class _LiveRun(RunSpan):
    def __init__(
        self,
        found: telemetry.Telemetry,
        assignment: SubTaskAssigned,
        state: RunCheckpoint,
        route: str,
    ) -> None:
        self.telemetry = found
        self.state = state
        self.labels = {ROLE: assignment.role, KIND: assignment.subtask_kind or ""}
        self.name = f"invoke_agent {assignment.role}"
        self.base: dict[str, str | int] = {
            OPERATION: "invoke_agent",
            "gen_ai.agent.name": assignment.role,
            PROVIDER: provider_of(route),
            REQUEST_MODEL: model_of(route),
            "hivebus.task.id": assignment.task_id,
            "hivebus.subtask.id": assignment.subtask_id,
            KIND: assignment.subtask_kind or "",
            "hivebus.run.id": state.run_id,
            "hivebus.attempt": assignment.attempt,
        }
        self.known = {p.request.approval_id for p in state.approvals}
        self.saved = False
        self.ended = False
        self.token: Token[Context] | None = None
        links = self._resumes(state.trace)
        self.start_ns = time.time_ns()
        self.started = time.monotonic()
        self.span = found.tracer.start_span(
            self.name, attributes=self.base, links=links, start_time=self.start_ns
        )
        made = self.span.get_span_context()
        parent = trace.get_current_span().get_span_context()
        state.trace = RunTrace(
            traceparent=telemetry.traceparent(
                made.trace_id, made.span_id, sampled=made.trace_flags.sampled
            ),
            parent=telemetry.traceparent(
                parent.trace_id, parent.span_id, sampled=parent.trace_flags.sampled
            )
            if parent.is_valid
            else None,
            start_ns=self.start_ns,
        )

    def _resumes(self, stored: RunTrace | None) -> list[Link]:
        """The link to the run span this one resumes, recording it first if it never ended."""
        ids = telemetry.parse_traceparent(stored.traceparent) if stored is not None else None
        if stored is None or ids is None:
            return []
        if not stored.ended:
            self.telemetry.record_span(
                self.name,
                trace_id=ids[0],
                span_id=ids[1],
                parent=telemetry.extract({telemetry.TRACEPARENT: stored.parent})
                if stored.parent
                else None,
                start_ns=stored.start_ns,
                end_ns=max(time.time_ns(), stored.start_ns),
                attributes={**self.base, STATUS: "interrupted", "hivebus.run.reason": INTERRUPTED},
                error=INTERRUPTED,
                error_type="interrupted",
            )
        linked = SpanContext(
            ids[0], ids[1], is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
        )
        return [Link(linked, {"hivebus.link": "resumes"})]

    def saving(self, save: Save) -> Save:
        async def traced(state: RunCheckpoint) -> None:
            if state.trace is not None:
                state.trace.ended = state.phase in LAST_SAVES
            await save(state)
            self.saved = True

        return traced

    def _end(
        self, status: str, reason: str, usage: Usage, *, failed: bool, error_type: str | None = None
    ) -> None:
        self.ended = True
        span = self.span
        span.set_attributes(
            {
                STATUS: status,
                "hivebus.run.reason": reason,
                "hivebus.usage.input_tokens": usage.input_tokens,
                "hivebus.usage.output_tokens": usage.output_tokens,
                "hivebus.usage.cost_usd": usage.cost_usd,
                "hivebus.usage.steps": usage.steps,
            }
        )
        if failed:
            span.set_attribute(ERROR_TYPE, error_type or status)
            span.set_status(Status(StatusCode.ERROR, reason))
        span.end()
        self.telemetry.metrics.agent_duration.record(
            time.monotonic() - self.started, {STATUS: status, **self.labels}
        )

    def paused(self, paused: RunPaused) -> None:
        metrics = self.telemetry.metrics
        for request in paused.requests:
            again = request.approval_id in self.known
            self.span.add_event(
                "approval_requested",
                {
                    "hivebus.approval.id": request.approval_id,
                    "hivebus.approval.kind": request.approval_kind.value,
                    "gen_ai.tool.name": request.tool,
                    "hivebus.approval.asked_again": again,
                },
            )
            if not again:
                metrics.approvals_requested.add(
                    1, {"hivebus.approval.kind": request.approval_kind.value, **self.labels}
                )
        waiting = ", ".join(r.approval_id for r in paused.requests)
        self._end(
            RunPhase.AWAITING_APPROVAL.value,
            f"waiting for approval: {waiting}",
            self.state.usage,
            failed=False,
        )

    def finished(self, finished: SubTaskFinished) -> None:
        status = finished.status.value
        metrics = self.telemetry.metrics
        metrics.run_steps.record(finished.usage.steps, {STATUS: status, **self.labels})
        if finished.limit is not None:
            metrics.limits_exceeded.add(1, {"hivebus.limit": finished.limit, **self.labels})
            self.span.set_attribute("hivebus.run.limit", finished.limit)
        self._end(
            status,
            finished.reason,
            finished.usage,
            failed=finished.status is not SubTaskStatus.COMPLETED,
        )

    def __enter__(self) -> Self:
        self.token = otel_context.attach(trace.set_span_in_context(self.span))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.token is not None:
            otel_context.detach(self.token)
        if self.ended:
            return
        status = "failed"
        if isinstance(error, LEFT_TO_RESUMER):
            if self.saved:
                return  # the delivery that takes the run over records it, from the checkpoint
            status = "interrupted"  # nobody else knows of this span: it ends here
        kind_name = type(error).__name__ if error is not None else "undecided"
        self._end(
            status, f"{kind_name}: {error}", self.state.usage, failed=True, error_type=kind_name
        )


def run_span(assignment: SubTaskAssigned, state: RunCheckpoint, chain: list[str]) -> RunSpan:
    """The span of the run `state` holds, for the model `chain` (use it as a context manager)."""
    found = telemetry.current()
    if not found.enabled:
        return NO_RUN
    return _LiveRun(found, assignment, state, chain[0] if chain else "")
