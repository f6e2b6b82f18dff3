"""`hivebus golden record`: a finished task's submission and events, written as a directory.

Every text written passes `redact_secrets`, as events do; the task's own id reads `{task}`.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from hivebus.agent.validators.secrets import redact_secrets
from hivebus.console.client import HiveClient
from hivebus.console.golden.expect import recorded
from hivebus.console.golden.files import (
    EXPECT_FILE,
    FORMAT,
    GOLDEN_FILE,
    TASK_FILE,
    GoldenError,
    safe_id,
)
from hivebus.console.golden.observe import TaskRecord, read_task
from hivebus.contracts import TaskSubmitted, subjects
from hivebus.core import jetstream
from hivebus.core import kv as kvcas

FINISHED_IDLE_S = 5.0
"""A finished task's events all come at once; this long without one means it is still going."""

EXPECT_HEADER = """\
# What a replay of this task must show (`hivebus golden run`), recorded exact.
# Loosen any value into a matcher: {pattern: REGEX}, {schema: JSON_SCHEMA},
# {min: N, max: M} (steps, tokens, cost_usd), or delete a key to stop checking it.
"""


def _dump(data: Any) -> str:
    return yaml.safe_dump(redact_secrets(data), sort_keys=False, allow_unicode=True, width=100)


def plan_file(submission: TaskSubmitted) -> dict[str, Any]:
    """The submission as a plan file: goal, budget and (when it had one) its sub-tasks."""
    body: dict[str, Any] = {
        "goal": submission.goal,
        "budget": submission.budget.model_dump(mode="json"),
    }
    if submission.plan is not None:
        body["subtasks"] = [
            spec.model_dump(mode="json", exclude_defaults=True) for spec in submission.plan.subtasks
        ]
    return body


def _relative(config: Path | None, to: Path) -> str | None:
    if config is None:
        return None
    return Path(os.path.relpath(config.resolve(), to.resolve())).as_posix()


def write_golden(
    to: Path,
    submission: TaskSubmitted,
    run: TaskRecord,
    *,
    config: Path | None,
    force: bool = False,
) -> None:
    """Write the golden directory `to` of `run` (its submission was `submission`)."""
    if to.exists() and any(to.iterdir()) and not force:
        raise GoldenError(f"{to} is not empty: choose another directory, or pass --force")
    for subtask_id in run.subtasks:
        safe_id(subtask_id, f"task {run.task_id}")
    (to / "models").mkdir(parents=True, exist_ok=True)
    (to / "tools").mkdir(exist_ok=True)
    index = {
        "format": FORMAT,
        "name": to.resolve().name,
        "recorded_from": run.task_id,
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": _relative(config, to),
        "subtasks": {
            subtask_id: {"role": record.role, "model": record.model}
            for subtask_id, record in run.subtasks.items()
        },
    }
    (to / GOLDEN_FILE).write_text(_dump(index), encoding="utf-8")
    (to / TASK_FILE).write_text(_dump(plan_file(submission)), encoding="utf-8")
    (to / EXPECT_FILE).write_text(EXPECT_HEADER + _dump(recorded(run)), encoding="utf-8")
    for subtask_id, record in run.subtasks.items():
        turns = record.turns or [{"error": "bad_request"}]  # no model answered in the recording
        (to / "models" / f"{subtask_id}.yaml").write_text(_dump(turns), encoding="utf-8")
        (to / "tools" / f"{subtask_id}.yaml").write_text(_dump(record.calls), encoding="utf-8")


async def record_task(
    client: HiveClient, task_id: str, to: Path, *, config: Path | None, force: bool = False
) -> TaskRecord:
    """Read finished task `task_id` from the bus and write it to `to`; returns what it read."""
    tasks = await (await jetstream(client.broker)).key_value(subjects.TASKS_BUCKET)
    submission, _ = await kvcas.read(tasks, subjects.plan_key(task_id), TaskSubmitted)
    if submission is None:
        raise GoldenError(f"there is no task {task_id!r} on this bus (or its record has expired)")
    try:
        run = await read_task(client, task_id, idle_timeout_s=FINISHED_IDLE_S)
    except TimeoutError as exc:
        raise GoldenError(
            f"task {task_id} has not finished: record it when it has ({exc})"
        ) from exc
    write_golden(to, submission, run, config=config, force=force)
    return run
