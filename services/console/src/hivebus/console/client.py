"""A client of a running hivebus: submit a task, follow its events, read its state."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Self

import yaml
from faststream.nats import JStream, NatsBroker
from nats.js.api import DeliverPolicy
from pydantic import BaseModel

from hivebus.contracts import (
    BreakerChanged,
    BudgetWarning,
    StepRecorded,
    SubTaskFinished,
    SubTaskStarted,
    TaskFinished,
    TaskRejected,
    subjects,
)
from hivebus.core import Settings, jetstream, new_broker
from hivebus.orchestrator.state import KvStore, SubTaskState, TaskMeta


class PlanFileError(Exception):
    """A plan file that cannot be read as a mapping."""


EVENT_TYPES: dict[str, type[BaseModel]] = {
    "subtask_started": SubTaskStarted,
    "step": StepRecorded,
    "subtask_finished": SubTaskFinished,
    "task_finished": TaskFinished,
    "task_rejected": TaskRejected,
    "budget_warning": BudgetWarning,
    "breaker_changed": BreakerChanged,
}

FINAL_KINDS = ("task_finished", "task_rejected")


def load_plan_file(path: Path, task_id: str | None = None) -> dict[str, Any]:
    """Read a plan file into a submission body (validated by the orchestrator, not here).

    The file holds `goal`, optional `task_id`, `budget` and `subtasks`; relative
    `scripted:` model paths are made absolute against the file's directory.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanFileError(f"cannot read plan {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise PlanFileError(f"plan {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PlanFileError(f"plan {path} must be a mapping with `goal` and `subtasks`")
    body: dict[str, Any] = {k: v for k, v in data.items() if k != "subtasks"}
    subtasks = data.get("subtasks")
    if isinstance(subtasks, list):
        base = path.resolve().parent
        for item in subtasks:
            model = item.get("model") if isinstance(item, dict) else None
            if isinstance(model, str) and model.startswith("scripted:"):
                script = Path(model.removeprefix("scripted:"))
                if not script.is_absolute():
                    item["model"] = f"scripted:{(base / script).resolve()}"
        body["plan"] = {"subtasks": subtasks}
    body["task_id"] = task_id or body.get("task_id") or f"t-{uuid.uuid4().hex[:12]}"
    return body


class HiveClient:
    """Talks to the bus with its own FastStream broker."""

    def __init__(self, url: str, settings: Settings) -> None:
        """Connect lazily to `url`."""
        self.settings = settings
        self.broker: NatsBroker = new_broker(url, "client")

    async def __aenter__(self) -> Self:
        """Connect."""
        await self.broker.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Disconnect."""
        await self.broker.stop()

    async def submit(self, body: dict[str, Any]) -> str:
        """Publish a submission with `Nats-Msg-Id` = task id; returns the task id."""
        task_id = str(body["task_id"])
        await self.broker.publish(
            body,
            subjects.SUBMIT,
            headers={subjects.MSG_ID_HEADER: task_id},
            stream=subjects.TASKS_STREAM,
            timeout=self.settings.publish_timeout_s,
        )
        return task_id

    async def follow(
        self, task_id: str, idle_timeout_s: float | None = None
    ) -> AsyncIterator[tuple[str, BaseModel]]:
        """Yield `(kind, event)` of a task from its first event until it finishes or is rejected."""
        subscriber = self.broker.subscriber(
            subjects.events_of(task_id),
            stream=JStream(subjects.EVENTS_STREAM, declare=False),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            include_in_schema=False,
        )
        await subscriber.start()
        waited = 0.0
        try:
            while True:
                message = await subscriber.get_one(timeout=1.0)
                if message is None:
                    waited += 1.0
                    if idle_timeout_s is not None and waited >= idle_timeout_s:
                        raise TimeoutError(f"no event for task {task_id} in {idle_timeout_s:g}s")
                    continue
                waited = 0.0
                kind = message.raw_message.subject.rsplit(".", 1)[-1]
                model = EVENT_TYPES.get(kind)
                if model is None:
                    continue
                event = model.model_validate_json(message.body)
                yield kind, event
                if kind in FINAL_KINDS:
                    return
        finally:
            await subscriber.stop()

    async def status(
        self, task_id: str
    ) -> tuple[TaskMeta | None, list[SubTaskState], TaskFinished | None]:
        """The task's state from KV: meta, every sub-task, and the result if finished."""
        js = await jetstream(self.broker)
        store = KvStore(await js.key_value(subjects.TASKS_BUCKET))
        meta = await store.read_meta(task_id)
        submission = await store.load_plan(task_id)
        states: list[SubTaskState] = []
        if submission is not None and submission.plan is not None:
            for spec in submission.plan.subtasks:
                state = await store.read_subtask(task_id, spec.id)
                if state is not None:
                    states.append(state)
        return meta, states, await store.read_result(task_id)
