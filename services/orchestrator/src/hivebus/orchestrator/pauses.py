"""Paused runs: approval requests, people's decisions, expiries, and the dispatch that resumes.

    requested  the record (once; resolved at once by a decision sent before it, see `early`),
               the sub-task `awaiting_approval`, the expiry scheduled (a request that comes
               after a cancel or the deadline ends the sub-task instead)
    decided    judged against the record (`approvals.judge`); the first valid decision wins by
               compare-and-set, anything else is answered with `ApprovalRefused`
    expired    a pending record resolves `reject` by hivebus
    resolved   `ApprovalResolved` on EVENTS; the last approval of the pause makes the sub-task
               `ready`, and it is dispatched again with every resolution (`resume`)

Each step is idempotent, like the scheduler's: a redelivered request, decision or expiry
finishes what an earlier delivery began and publishes under the same message ids.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hivebus.contracts import (
    ApprovalDecided,
    ApprovalExpired,
    ApprovalKind,
    ApprovalRecord,
    ApprovalRefused,
    ApprovalRequested,
    ApprovalResolved,
    ApprovalStatus,
    RefusalCode,
    SubTaskStatus,
    TaskMeta,
    TaskStatus,
    is_identifier,
)
from hivebus.core import CoreError, get_logger
from hivebus.orchestrator import approvals, awaiting, tracing
from hivebus.orchestrator.early import DecisionLog
from hivebus.orchestrator.graph import Graph
from hivebus.orchestrator.scheduler import Scheduler

log = get_logger(__name__)


class DecisionBeforeRequestError(CoreError):
    """A decision names an approval not requested yet: it is delivered again a moment later.

    A person (or a script) may decide by the deterministic id before the run has asked;
    `Settings.approval_early_wait_s` bounds how long such a decision waits.
    """

    retryable = True


class ExpiryNotDueError(CoreError):
    """An approval's expiry came before its `expires_at` (clock skew): delivered again later."""

    retryable = True


def _running(meta: TaskMeta | None) -> bool:
    """Whether decisions apply: the task runs (or is planned: its plan may be reviewed)."""
    return (
        meta is not None
        and meta.status in {TaskStatus.RUNNING, TaskStatus.PLANNING}
        and meta.ending is None
    )


class Pauses:
    """Applies approval requests, decisions and expiries to task state, through the scheduler."""

    def __init__(self, scheduler: Scheduler, decisions: DecisionLog, early_wait_s: float) -> None:
        """Work on the scheduler's store, events and clock.

        A decision waits `early_wait_s` for its request; a request finds the decisions sent
        for it that long before in `decisions`.
        """
        self.scheduler = scheduler
        self.decisions = decisions
        self.store = scheduler.store
        self.events = scheduler.events
        self.clock = scheduler.clock
        self.early_wait_s = early_wait_s

    async def requested(self, event: ApprovalRequested) -> None:
        """A run paused: keep the request, mark the sub-task waiting, schedule the expiry."""
        if event.approval_kind is ApprovalKind.PLAN:
            return  # the orchestrator recorded its own request before it published it
        if not approvals.has_safe_ids(event):
            log.warning("approval_id_invalid", approval_id=event.approval_id[:80])
            return
        loaded = await self.scheduler.load(event.task_id, event.subtask_id)
        if loaded is None or event.subtask_id not in loaded[1].specs:
            log.warning("approval_for_unknown_subtask", approval_id=event.approval_id)
            return
        record = await self.store.read_approval(event.task_id, event.approval_id)
        if record is None:
            early = await self._early(event)
            record = await self.store.update_approval(
                event.task_id, event.approval_id, approvals.request_record(event, early)
            )
        if record is not None and record.status is ApprovalStatus.RESOLVED:
            await self._resolved(record)  # decided early, or before a redelivery of this
        elif record is not None and record.status is ApprovalStatus.PENDING:
            await self._wait(record, loaded[1])

    async def _wait(self, record: ApprovalRecord, graph: Graph) -> None:
        """Pause the sub-task on a pending approval and schedule its expiry.

        A sub-task that is not waiting for it (a stale attempt, ended) closes it; a task a
        cancel or the deadline is ending ends the sub-task instead.
        """
        request = record.request
        task, ap, sid = request.task_id, request.approval_id, request.subtask_id
        pause = awaiting.pause(graph.specs[sid].role, graph.in_degree[sid], request)
        state = await self.store.update_subtask(task, sid, pause)
        if not awaiting.waits_for(state, request):
            status = state.status.value if state is not None else SubTaskStatus.PENDING.value
            why = f"sub-task {sid!r} (attempt {request.attempt}) is not waiting for it: {status}"
            await self.store.update_approval(task, ap, approvals.close(why))
            log.warning("approval_not_awaited", approval_id=ap, why=why)
            return
        meta = await self.store.read_meta(task)
        if not _running(meta):
            if meta is not None and meta.status == TaskStatus.RUNNING and meta.ending:
                await self.scheduler.stop(task, meta.ending, meta.reason)  # ends it and closes
        elif request.expires_at <= self.clock.now():
            await self._time_out(record)
        else:
            expiry = ApprovalExpired(
                task_id=task, approval_id=ap, subtask_id=sid, expires_at=request.expires_at
            )
            await self.events.publish(expiry)

    async def _early(self, request: ApprovalRequested) -> ApprovalResolved | None:
        """The first valid decision sent for `request` before it was recorded, if any."""
        if not _running(await self.store.read_meta(request.task_id)):
            return None
        now = self.clock.now()
        after = now - timedelta(seconds=self.early_wait_s)
        return approvals.first_valid(
            request, await self.decisions.since(request.task_id, after), now
        )

    async def decided(
        self,
        event: ApprovalDecided,
        *,
        received_at: datetime | None = None,
        last_delivery: bool = False,
    ) -> None:
        """A person's decision: the first valid one resolves the approval; others are refused.

        `received_at` is when the bus stored the decision (its own `ts` otherwise); a decision
        for an approval not requested yet waits for it (raising `DecisionBeforeRequestError`)
        while the task runs (or is not accepted yet), it is younger than the early wait, and
        this is not its `last_delivery`; then it is refused `unknown`.

        Raises:
            DecisionBeforeRequestError: retryable; the decision is delivered again.
        """
        task, ap = event.task_id, event.approval_id
        if not is_identifier(ap):
            why = f"{ap[:80]!r} is not an approval id (`ap-` and 16 hex digits)"
            await self.events.publish(approvals.refusal(event, RefusalCode.UNKNOWN, why))
            return
        record = await self.store.read_approval(task, ap)
        meta = await self.store.read_meta(task)
        running = _running(meta)
        now = self.clock.now()
        age_s = (now - (received_at or event.ts)).total_seconds()
        # A task not accepted yet may be about to be: its submission and this decision come
        # through different consumers, in either order.
        can_wait = (meta is None or running) and not last_delivery and age_s < self.early_wait_s
        verdict = approvals.judge(record, event, now=now, task_running=running, can_wait=can_wait)
        if verdict is None:
            raise DecisionBeforeRequestError(
                f"approval {ap!r} of task {task!r} is not requested (yet); the decision is "
                f"tried again for up to {self.early_wait_s:g}s"
            )
        if isinstance(verdict, ApprovalRefused):
            log.info("approval_refused", approval_id=ap, code=verdict.code.value)
            await self.events.publish(verdict)
            return
        assert record is not None  # noqa: S101 - judge resolves only what has a record
        if record.status is ApprovalStatus.PENDING and verdict.arguments is not None:
            refused = await self._plan_edit_refused(record, event, verdict.arguments)
            if refused:
                return
        if record.status is ApprovalStatus.PENDING:
            record = await self.store.update_approval(task, ap, approvals.resolve(verdict))
            resolution = record.resolution if record is not None else None
            if resolution is None or resolution.decision_event_id != event.event_id:
                # another decision (or the expiry) was written first
                lost = approvals.judge(record, event, now=now, task_running=running, can_wait=False)
                if isinstance(lost, ApprovalRefused):
                    await self.events.publish(lost)
                return
        assert record is not None  # noqa: S101 - resolved just above, or before
        await self._resolved(record)

    async def _plan_edit_refused(
        self, record: ApprovalRecord, event: ApprovalDecided, arguments: dict[str, Any]
    ) -> bool:
        """Refuse an edited plan that fails the planner's checks (the approval still waits)."""
        if record.request.approval_kind is not ApprovalKind.PLAN:
            return False
        errors = await self.scheduler.planner.edit_problems(record.request, arguments)
        if not errors:
            return False
        why = "the edited plan is not valid: " + "; ".join(errors)
        log.info("plan_edit_refused", approval_id=event.approval_id, errors=errors)
        await self.events.publish(approvals.refusal(event, RefusalCode.INVALID, why))
        return True

    async def expired(self, event: ApprovalExpired) -> None:
        """An approval's deadline: a pending one resolves `reject` ("approval timed out").

        Raises:
            ExpiryNotDueError: retryable; delivered before `expires_at` by this clock.
        """
        record = await self.store.read_approval(event.task_id, event.approval_id)
        if record is None:
            log.warning("expiry_for_unknown_approval", approval_id=event.approval_id)
            return
        if record.status is ApprovalStatus.PENDING:
            if self.clock.now() < record.request.expires_at:
                raise ExpiryNotDueError(
                    f"approval {event.approval_id!r} expires at "
                    f"{record.request.expires_at.isoformat()}; this clock is not there yet"
                )
            await self._time_out(record)
        elif record.resolution is not None and record.resolution.timed_out:
            await self._resolved(record)  # a redelivery: finish what the first one began

    async def _time_out(self, record: ApprovalRecord) -> None:
        request = record.request
        timeout = approvals.timed_out(request, self.clock.now())
        after = await self.store.update_approval(
            request.task_id, request.approval_id, approvals.resolve(timeout)
        )
        if after is not None and after.resolution == timeout:
            await self._resolved(after)  # else a decision came first: its handler goes on

    async def _resolved(self, record: ApprovalRecord) -> None:
        """Announce a resolution, add it to its sub-task, and resume the run once all are in."""
        resolution = record.resolution
        if resolution is None:
            return
        if record.request.approval_kind is ApprovalKind.PLAN:
            await self.events.publish(resolution)
            await self.scheduler.planner.reviewed(record)
            return
        loaded = await self.scheduler.load(resolution.task_id, resolution.subtask_id)
        if loaded is None:
            await self.events.publish(resolution)
            return
        submission, graph = loaded
        tracing.record_approval(submission, record)
        with tracing.under(submission, resolution.subtask_id):
            await self.events.publish(resolution)
        if resolution.subtask_id not in graph.specs:
            return
        sid = resolution.subtask_id
        change = awaiting.apply_resolution(graph.specs[sid].role, graph.in_degree[sid], record)
        state = await self.store.update_subtask(resolution.task_id, sid, change)
        if (
            state is not None
            and state.status == SubTaskStatus.READY
            and state.attempt == resolution.attempt
            and any(r.approval_id == resolution.approval_id for r in state.resume)
        ):
            await self.scheduler.resume(submission, graph, state)
