"""A client of a running hivebus: submit a task, follow its events, read its state, decide.

Approvals: `approvals` lists the pending ones (see `pending` for how, at scale), `decide`
sends a person's decision and, asked to, waits for what became of it (see `deciding`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Self

from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from hivebus.console.deciding import Outcome, OutcomeStatus, OutcomeWatch, not_found
from hivebus.console.pending import (
    DEFAULT_LIMIT,
    DEFAULT_SINCE_S,
    PendingApprovals,
    find_request,
    pending_in_task,
    pending_recent,
)
from hivebus.contracts import (
    EVENTS_BY_KIND,
    ApprovalDecided,
    ApprovalRequested,
    CancelRequested,
    DeadLetter,
    Decision,
    RevisedPlan,
    RunCheckpoint,
    RunPhase,
    SubTaskAssigned,
    SubTaskState,
    TaskFinished,
    TaskMeta,
    TaskSubmitted,
    subjects,
)
from hivebus.contracts.subjects import DeadLetterKind
from hivebus.core import Publisher, Settings, get_logger, jetstream, new_broker, telemetry
from hivebus.core import kv as kvcas
from hivebus.core.artifacts import ArtifactNotFoundError, Artifacts
from hivebus.core.yamlfile import load_yaml

log = get_logger(__name__)


class PlanFileError(Exception):
    """A plan file that cannot be read as a mapping."""


class ReplayError(Exception):
    """A dead letter that cannot be replayed (missing, or not a replayable kind)."""


FINAL_KINDS = ("task_finished", "task_rejected")
FOLLOW_QUEUE = 1000
"""Events of a followed task held before the server is asked to wait (flow control)."""


def load_plan_file(path: Path, task_id: str | None = None) -> dict[str, Any]:
    """Read a plan file into a submission body (validated by the orchestrator, not here).

    The file holds `goal`, optional `task_id`, `budget` and `subtasks`. A sub-task's
    `scripted:` model path is relative to the configuration's directory (where the services
    look for it), not to the plan file.
    """
    data = load_yaml(path, what="plan", error=PlanFileError)
    if not isinstance(data, dict):
        raise PlanFileError(f"plan {path} must be a mapping with `goal` and `subtasks`")
    body: dict[str, Any] = {k: v for k, v in data.items() if k != "subtasks"}
    subtasks = data.get("subtasks")
    if isinstance(subtasks, list):
        body["plan"] = {"subtasks": subtasks}
    body["task_id"] = task_id or body.get("task_id") or f"t-{uuid.uuid4().hex[:12]}"
    return body


async def accepted_submission(tasks: KeyValue, task_id: str) -> TaskSubmitted | None:
    """A task's submission with the plan it runs: given, planned from its goal, or revised.

    While the planner is at work, the goal-only submission; None for no such task.
    """
    revised, _ = await kvcas.read(tasks, subjects.revised_key(task_id), RevisedPlan)
    if revised is not None:
        return revised.submission
    submission, _ = await kvcas.read(tasks, subjects.plan_key(task_id), TaskSubmitted)
    if submission is not None and submission.plan is None:
        planned, _ = await kvcas.read(tasks, subjects.planned_key(task_id), TaskSubmitted)
        return planned or submission
    return submission


class HiveClient:
    """Talks to the bus with its own FastStream broker."""

    def __init__(self, url: str, settings: Settings) -> None:
        """Connect lazily to `url`."""
        self.settings = settings
        self.broker: NatsBroker = new_broker(url, "client", settings)
        self.publisher = Publisher(self.broker, settings.publish_timeout_s)

    async def __aenter__(self) -> Self:
        """Connect."""
        await self.broker.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Disconnect."""
        await self.broker.stop()

    async def submit(self, body: dict[str, Any], traceparent: str | None = None) -> str:
        """Publish a submission with `Nats-Msg-Id` = task id; returns the task id.

        The body goes as the client wrote it (the orchestrator validates it and answers bad
        input with a `TaskRejected`), so it is published raw, to the submission subject.
        The task's trace continues `traceparent` (W3C) when given, else the caller's current
        span when there is one; otherwise the orchestrator starts the task's own trace.
        """
        task_id = str(body["task_id"])
        headers = {subjects.MSG_ID_HEADER: task_id}
        if traceparent is not None:
            headers[telemetry.TRACEPARENT] = traceparent
        else:
            telemetry.inject(headers)
        await self.broker.publish(
            body,
            subjects.SUBMIT,
            headers=headers,
            stream=subjects.TASKS_STREAM,
            timeout=self.settings.publish_timeout_s,
        )
        return task_id

    async def follow(
        self, task_id: str, idle_timeout_s: float | None = None
    ) -> AsyncIterator[tuple[str, BaseModel]]:
        """Yield `(kind, event)` of a task from its first event until it finishes or is rejected.

        A `TaskFinished` passed by reference is yielded whole (see `whole_result`).
        """
        # An ordered push consumer: the server pushes to this connection's inbox, so a
        # client needs no right to pull from (or acknowledge on) any consumer of EVENTS.
        queue: asyncio.Queue[Msg] = asyncio.Queue(FOLLOW_QUEUE)

        async def on(msg: Msg) -> None:
            await queue.put(msg)

        js = await jetstream(self.broker)
        sub = await js.subscribe(
            subjects.events_of(task_id),
            stream=subjects.EVENTS_STREAM,
            cb=on,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        waited = 0.0
        try:
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), 1.0)
                except TimeoutError:
                    waited += 1.0
                    if idle_timeout_s is not None and waited >= idle_timeout_s:
                        raise TimeoutError(
                            f"no event for task {task_id} in {idle_timeout_s:g}s"
                        ) from None
                    continue
                waited = 0.0
                kind = message.subject.rsplit(".", 1)[-1]
                model = EVENTS_BY_KIND.get(kind)
                if model is None:
                    continue
                event = model.model_validate_json(message.data)
                if isinstance(event, TaskFinished):
                    event = await self.whole_result(event)
                yield kind, event
                if kind in FINAL_KINDS:
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def artifact(self, name: str) -> bytes:
        """The content stored as `name` in the `artifacts` store (an `output_ref`, say).

        Raises:
            ArtifactNotFoundError: nothing is stored under `name`.
        """
        return await Artifacts(await jetstream(self.broker)).get(name)

    async def whole_result(self, result: TaskFinished) -> TaskFinished:
        """`result` whole: read from `artifacts` when it was too large for one message.

        A result whose artifact is gone is returned as it travelled (its `result_ref` says so).
        """
        if result.result_ref is None:
            return result
        try:
            return TaskFinished.model_validate_json(await self.artifact(result.result_ref))
        except ArtifactNotFoundError as exc:
            log.warning("result_artifact_missing", task_id=result.task_id, error=str(exc))
            return result

    async def cancel(self, task_id: str, reason: str) -> None:
        """Ask the orchestrator to cancel a task (runs stop at their next step boundary)."""
        await self.publisher.publish(CancelRequested(task_id=task_id, reason=reason))

    async def approvals(
        self,
        task_id: str | None = None,
        *,
        since_s: float = DEFAULT_SINCE_S,
        limit: int = DEFAULT_LIMIT,
    ) -> PendingApprovals:
        """The pending approvals, oldest first: of one task, or of every task asked lately.

        One task: its approval records in KV. Every task: the approval events of the last
        `since_s` seconds (at most `limit`), each confirmed by its record (`pending`).
        """
        js = await jetstream(self.broker)
        if task_id is not None:
            return PendingApprovals(await pending_in_task(js, task_id))
        return await pending_recent(js, since_s=since_s, limit=limit)

    async def find_approval(
        self, approval_id: str, task_id: str | None = None, *, since_s: float = DEFAULT_SINCE_S
    ) -> ApprovalRequested | None:
        """The request of `approval_id` (any status), in `task_id` or asked in `since_s`."""
        return await find_request(
            await jetstream(self.broker), approval_id, task_id, since_s=since_s
        )

    async def decide(
        self,
        approval_id: str,
        decision: Decision,
        by: str,
        reason: str = "",
        *,
        arguments: dict[str, Any] | None = None,
        answer: str | None = None,
        task_id: str | None = None,
        wait_s: float | None = None,
        since_s: float = DEFAULT_SINCE_S,
    ) -> Outcome:
        """Publish a person's `ApprovalDecided` on CONTROL; with `wait_s`, wait for its outcome.

        The task is `task_id`, or the one that asked for `approval_id` (found among the
        requests of the last `since_s` seconds); an id nobody asked for there is refused
        here (`unknown`) and nothing is sent. Without `wait_s` the outcome is `sent`.

        Raises:
            pydantic.ValidationError: a field the contract refuses (an empty `by`, say).
        """
        if task_id is None:
            request = await self.find_approval(approval_id, since_s=since_s)
            if request is None:
                return not_found(
                    approval_id,
                    f"no approval {approval_id} was asked for in the last {since_s / 3600:g}h; "
                    "check the id with `hivebus approvals`, or name its task with --task",
                )
            task_id = request.task_id
        decided = ApprovalDecided(
            task_id=task_id,
            approval_id=approval_id,
            decision=decision,
            by=by,
            reason=reason,
            arguments=arguments,
            answer=answer,
        )
        if not wait_s:
            await self.publisher.publish(decided)
            return Outcome(OutcomeStatus.SENT, approval_id, decided=decided)
        async with OutcomeWatch(await jetstream(self.broker), task_id) as watch:
            await self.publisher.publish(decided)
            return await watch.wait(decided, wait_s)

    async def dead_letters(self, limit: int = 1000) -> list[tuple[int, DeadLetter]]:
        """Dead letters by stream sequence, oldest first (at most `limit`)."""
        js = await jetstream(self.broker)
        info = await js.stream_info(subjects.DLQ_STREAM)
        letters: list[tuple[int, DeadLetter]] = []
        seq = max(info.state.first_seq, 1)
        while seq <= info.state.last_seq and len(letters) < limit:
            try:
                raw = await js.get_msg(subjects.DLQ_STREAM, seq)
            except NotFoundError:
                seq += 1
                continue
            letters.append((seq, DeadLetter.model_validate_json(raw.data or b"{}")))
            seq += 1
        return letters

    async def dead_letter(self, seq: int) -> DeadLetter | None:
        """One dead letter by its stream sequence."""
        found = await self._dead_letter(seq)
        return found[0] if found is not None else None

    async def _dead_letter(self, seq: int) -> tuple[DeadLetter, str | None] | None:
        """A dead letter and the trace it was dead-lettered in (its `traceparent`)."""
        js = await jetstream(self.broker)
        try:
            raw = await js.get_msg(subjects.DLQ_STREAM, seq)
        except NotFoundError:
            return None
        letter = DeadLetter.model_validate_json(raw.data or b"{}")
        return letter, (raw.headers or {}).get(telemetry.TRACEPARENT)

    async def replay(self, seq: int, *, from_checkpoint: bool) -> str:
        """Submit a dead-lettered sub-task again, as a new task of that one sub-task.

        Its dependency outputs go along as they were; with `from_checkpoint` the new run
        starts from the dead run's last checkpoint instead of from scratch. A task that
        was dead-lettered at its deadline is submitted again whole. The new task's trace
        links to the one the letter was dead-lettered in (`replay_of`).
        """
        found = await self._dead_letter(seq)
        if found is None:
            raise ReplayError(f"no dead letter {seq}")
        letter, traced = found
        link = {"replay_of": traced} if telemetry.parse_traceparent(traced) else {}
        if letter.why == DeadLetterKind.DEADLINE.value:
            original = TaskSubmitted.model_validate(letter.original)
            task_id = f"{original.task_id}-replay-{seq}"
            body = original.model_dump(
                mode="json", exclude={"event_id", "ts", "traceparent", "replay_of"}
            )
            await self.submit({**body, "task_id": task_id, **link})
            return task_id
        assignment = SubTaskAssigned.model_validate(letter.original)
        task_id = f"{assignment.task_id}-replay-{seq}"
        inputs = dict(assignment.input)
        if assignment.dependencies:
            inputs["dependency_outputs"] = {d.subtask_id: d.output for d in assignment.dependencies}
        spec = {
            "id": assignment.subtask_id,
            "role": assignment.role,
            "prompt": assignment.prompt,
            "input": inputs,
            "limits": assignment.limits.model_dump(),
            "model": assignment.model,
            "output_schema": assignment.output_schema,
            "kind": assignment.subtask_kind,
        }
        if from_checkpoint and letter.checkpoint is not None:
            checkpoint = RunCheckpoint.model_validate(letter.checkpoint)
            state = checkpoint.model_copy(update={"finished": None, "owner": ""})
            if state.phase == RunPhase.FINISHED:
                state.phase = RunPhase.MODEL
            js = await jetstream(self.broker)
            runs = await js.key_value(subjects.RUNS_BUCKET)
            key = subjects.checkpoint_key(task_id, assignment.subtask_id, 1)
            await runs.put(key, state.model_dump_json().encode())
        await self.submit(
            {
                "task_id": task_id,
                "goal": assignment.goal,
                "budget": assignment.budget.model_dump(),
                "plan": {"subtasks": [{k: v for k, v in spec.items() if v is not None}]},
                **link,
            }
        )
        return task_id

    async def status(
        self, task_id: str
    ) -> tuple[TaskMeta | None, list[SubTaskState], TaskFinished | None]:
        """The task's state from KV: meta, every sub-task, and the result if finished."""
        js = await jetstream(self.broker)
        tasks = await js.key_value(subjects.TASKS_BUCKET)
        meta, _ = await kvcas.read(tasks, subjects.meta_key(task_id), TaskMeta)
        submission = await accepted_submission(tasks, task_id)
        states: list[SubTaskState] = []
        if submission is not None and submission.plan is not None:
            for spec in submission.plan.subtasks:
                key = subjects.subtask_key(task_id, spec.id)
                state, _ = await kvcas.read(tasks, key, SubTaskState)
                # No key yet means pending: the orchestrator writes a sub-task's state only
                # when something happens to it.
                states.append(state or SubTaskState(id=spec.id, role=spec.role))
        result, _ = await kvcas.read(tasks, subjects.result_key(task_id), TaskFinished)
        return meta, states, result
