"""One task's page data (`GET /api/tasks/{id}`), read from KV `tasks` as `hivebus status` does.

A running task's sub-tasks come from their KV states; a finished one's from its whole
`TaskFinished` (read from `artifacts` when it was too large for a message), over the states.
A submission the orchestrator has not taken yet, or rejected, has no KV state: its page is
made from the index and the submission on TASKS.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from hivebus.console.client import HiveClient, accepted_submission
from hivebus.console.dashboard.index import REJECTED, TaskEntry, TaskIndex, iso
from hivebus.console.dashboard.layout import layout
from hivebus.contracts import (
    PlanningInfo,
    SubTaskSpec,
    SubTaskState,
    SubTaskSummary,
    TaskBudget,
    TaskFinished,
    TaskMeta,
    TaskStatus,
    TaskSubmitted,
    Usage,
    subjects,
)
from hivebus.core import jetstream
from hivebus.core import kv as kvcas
from hivebus.core.lru import Lru
from hivebus.orchestrator.tracing import trace_ids

READS_AT_ONCE = 32
"""Sub-task states read concurrently."""

LAYOUTS_KEPT = 256
"""Plans whose layout is kept (a plan never changes once accepted)."""


def trace_link(template: str | None, trace_id: str | None) -> str | None:
    """`HIVEBUS_TRACE_URL` with the task's trace id in it, or None."""
    if template is None or trace_id is None:
        return None
    return template.replace("{trace_id}", trace_id)


def _trace_id(submission: TaskSubmitted | None) -> str | None:
    return None if submission is None else f"{trace_ids(submission)[0]:032x}"


async def _submission_on_tasks(js: JetStreamContext, entry: TaskEntry) -> TaskSubmitted | None:
    if not entry.seq:
        return None
    try:
        raw = await js.get_msg(subjects.TASKS_STREAM, entry.seq)
        return TaskSubmitted.model_validate_json(raw.data or b"{}")
    except (NotFoundError, ValidationError):
        return None


async def _states(
    js: JetStreamContext, task_id: str, submission: TaskSubmitted
) -> list[SubTaskState]:
    kv = await js.key_value(subjects.TASKS_BUCKET)
    specs = submission.plan.subtasks if submission.plan is not None else []
    states: list[SubTaskState] = []
    for start in range(0, len(specs), READS_AT_ONCE):
        chunk = specs[start : start + READS_AT_ONCE]
        read = await asyncio.gather(
            *(kvcas.read(kv, subjects.subtask_key(task_id, s.id), SubTaskState) for s in chunk)
        )
        states.extend(
            state or SubTaskState(id=spec.id, role=spec.role)
            for spec, (state, _) in zip(chunk, read, strict=True)
        )
    return states


def _subtask_row(
    spec: SubTaskSpec, state: SubTaskState, summary: SubTaskSummary | None
) -> dict[str, Any]:
    source: SubTaskState | SubTaskSummary = summary or state
    return {
        "id": spec.id,
        "role": spec.role,
        "kind": spec.kind,
        "status": source.status.value,
        "reason": source.reason,
        "blocked_by": source.blocked_by,
        "depends_on": list(spec.depends_on),
        "attempt": state.attempt,
        "usage": source.usage.model_dump(mode="json"),
        "output": source.output,
        "flags": list(source.flags),
        "approvals": [a.model_dump(mode="json") for a in source.approvals],
    }


class Details:
    """Builds TaskDetail documents; keeps the layouts it computed."""

    def __init__(self, client: HiveClient, index: TaskIndex, trace_url: str | None) -> None:
        """Read through `client`, fall back on `index`, link traces with `trace_url`."""
        self.client = client
        self.index = index
        self.trace_url = trace_url
        self._layouts: Lru[str, dict[str, Any]] = Lru(LAYOUTS_KEPT)

    async def graph(self, task_id: str, submission: TaskSubmitted | None) -> dict[str, Any]:
        """The plan's layout (computed off the event loop once per task)."""
        cached = self._layouts.get(task_id)
        if cached is not None:
            return cached
        specs = submission.plan.subtasks if submission and submission.plan else []
        drawn = await asyncio.to_thread(layout, [(s.id, s.depends_on) for s in specs])
        if specs:  # a task still being planned has no plan to keep yet
            self._layouts.put(task_id, drawn)
        return drawn

    async def detail(self, task_id: str) -> dict[str, Any] | None:
        """The task's TaskDetail, or None when no such task was submitted."""
        js = await jetstream(self.client.broker)
        kv = await js.key_value(subjects.TASKS_BUCKET)
        submission = await accepted_submission(kv, task_id)
        meta, _ = await kvcas.read(kv, subjects.meta_key(task_id), TaskMeta)
        result, _ = await kvcas.read(kv, subjects.result_key(task_id), TaskFinished)
        entry = self.index.entries.get(task_id)
        if submission is None:
            if entry is None:
                return None
            submission = await _submission_on_tasks(js, entry)
        if result is not None:
            result = await self.client.whole_result(result)
        states = await _states(js, task_id, submission) if submission is not None else []
        return await self._document(task_id, submission, meta, states, result=result, entry=entry)

    async def _document(
        self,
        task_id: str,
        submission: TaskSubmitted | None,
        meta: TaskMeta | None,
        states: list[SubTaskState],
        *,
        result: TaskFinished | None,
        entry: TaskEntry | None,
    ) -> dict[str, Any]:
        rejected = entry is not None and entry.status == REJECTED and meta is None
        summaries = {s.id: s for s in (result.subtasks if result else [])}
        specs = submission.plan.subtasks if submission and submission.plan else []
        subtasks = [
            _subtask_row(spec, state, summaries.get(spec.id))
            for spec, state in zip(specs, states, strict=True)
        ]
        # The list's time (when TASKS stored the submission) first, so both pages agree.
        submitted_at = (entry.submitted_at if entry else None) or (
            meta.submitted_at if meta else None
        )
        submitted_at = submitted_at or (submission.ts if submission else None)
        finished_at = result.ts if result else (entry.finished_at if rejected and entry else None)
        if result is not None:
            status, reason, usage = result.status.value, result.reason, result.usage
        else:
            usage = Usage()
            for state in states:
                usage = usage.plus(state.usage)
            status = meta.status.value if meta else TaskStatus.SUBMITTED.value
            reason = meta.reason if meta else ""
            if rejected and entry is not None:
                status, reason = REJECTED, entry.reason
        duration = None
        if finished_at is not None and submitted_at is not None:
            duration = round(max((finished_at - submitted_at).total_seconds(), 0.0), 3)
        trace_id = _trace_id(submission)
        goal = submission.goal if submission else (entry.goal if entry else "")
        return {
            "task_id": task_id,
            "goal": goal,
            "status": status,
            "reason": reason,
            "errors": list(entry.errors) if rejected and entry else [],
            "degraded": bool(result and result.degraded),
            "budget": (submission.budget if submission else TaskBudget()).model_dump(),
            "usage": usage.model_dump(mode="json"),
            "submitted_at": iso(submitted_at),
            "finished_at": iso(finished_at),
            "duration_s": duration,
            "output": result.output if result else None,
            "trace_id": trace_id,
            "trace_url": trace_link(self.trace_url, trace_id),
            "planning": (meta.planning if meta else PlanningInfo()).model_dump(mode="json"),
            "subtasks": subtasks,
            "graph": await self.graph(task_id, None if rejected else submission),
        }
