"""What a task did, read from its events: the same reading for a recording and a replay.

Per sub-task it keeps the last attempt (the one whose `SubTaskFinished` came last): its
status, reason, output (whole, when it travelled by reference), step count, tool sequence and
usage, and for a recording its model turns and tool calls. Steps are taken by number, the last
copy winning, so a run resumed after a crash (which records its remaining steps under a new
run id) reads as one run. The task's own id is replaced by `{task}` in every text, so a replay
(a new task id) compares equal to its recording.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hivebus.console.client import HiveClient
from hivebus.contracts import (
    ApprovalRequested,
    StepRecorded,
    SubTaskFinished,
    TaskFinished,
    TaskRejected,
)

TASK_PLACEHOLDER = "{task}"


@dataclass
class SubTaskRecord:
    """One sub-task's last attempt."""

    subtask_id: str
    role: str
    status: str
    reason: str
    output: Any
    steps: int
    tools: list[str]
    tokens: int
    cost_usd: float
    flags: list[str]
    model: str | None
    turns: list[dict[str, Any]] = field(default_factory=list)
    """Model turns as scripted entries (`hivebus.agent.models.scripted`)."""
    calls: list[dict[str, Any]] = field(default_factory=list)
    """Tool calls: `{tool, args, result}` (a `ToolResult` as a mapping)."""


@dataclass
class TaskRecord:
    """A whole task: how it ended and each sub-task."""

    task_id: str
    status: str
    reason: str
    subtasks: dict[str, SubTaskRecord]
    approvals: list[str] = field(default_factory=list)
    """Approvals the task asked a person for (`tool` or plan, with the request id)."""


def _scrub(value: Any, task_id: str) -> Any:
    """`value` with the task's id in every text replaced by `{task}`."""
    text = json.dumps(value)
    if task_id not in text:
        return value
    return json.loads(text.replace(task_id, TASK_PLACEHOLDER))


def _turn(step: StepRecorded, after: str | list[str]) -> dict[str, Any] | None:
    """A model step as a scripted entry; None for a step that left no answer."""
    output = step.output if isinstance(step.output, dict) else {}
    usage = output.get("usage") or {}
    turn: dict[str, Any]
    calls = output.get("tool_calls") or []
    if calls:
        scripted = [{"tool": c.get("name"), "args": c.get("args", {})} for c in calls]
        turn = dict(scripted[0]) if len(scripted) == 1 else {"calls": scripted}
    elif output.get("text") is not None:
        turn = {"text": output["text"]}
    else:
        return None
    turn["usage"] = {
        "input_tokens": int(usage.get("input_tokens", 0)),
        "output_tokens": int(usage.get("output_tokens", 0)),
    }
    turn["after"] = after
    return turn


def conversation(steps: list[StepRecorded]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The model turns and tool calls of one run's steps, in step order.

    Each turn's `after` is what its conversation ended with: the prompt or a correction (a
    user message) after a text answer, else the results of the tool steps since the last turn.
    """
    turns: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    since: list[str] = []
    models = [s for s in steps if s.step_kind == "model"]
    for step in steps:
        if step.step_kind == "tool":
            since.append(step.name)
            if isinstance(step.output, dict):
                calls.append({"tool": step.name, "args": step.input, "result": step.output})
            continue
        turn = _turn(step, since or "user")
        if turn is not None:
            turns.append(turn)
        elif step is models[-1]:
            turns.append({"error": "bad_request"})  # the run ended on a call that failed
        since = []
    return turns, calls


def _tool(step: StepRecorded) -> str:
    """A tool step as the tool sequence shows it: `NAME`, or `NAME (ERROR KIND)` when it failed."""
    result = step.output if isinstance(step.output, dict) else {}
    if result.get("ok", True):
        return step.name
    error = result.get("error") or {}
    return f"{step.name} ({error.get('kind', 'failed')})"


async def _whole(client: HiveClient, step: StepRecorded) -> StepRecorded:
    """A step whose content travelled by reference, with its input and output whole."""
    if step.content_ref is None:
        return step
    whole = json.loads(await client.artifact(step.content_ref))
    return step.model_copy(update={"input": whole["input"], "output": whole["output"]})


async def _output(client: HiveClient, finished: SubTaskFinished) -> Any:
    if finished.output_ref is None:
        return finished.output
    return json.loads(await client.artifact(finished.output_ref))


async def read_task(
    client: HiveClient,
    task_id: str,
    *,
    idle_timeout_s: float,
    stop_at_approval: bool = False,
) -> TaskRecord:
    """Follow `task_id` to its end and read what it did.

    With `stop_at_approval`, the first approval request ends the reading (status `waiting`):
    a replay has no person to decide it.

    Raises:
        TimeoutError: no event came for `idle_timeout_s` (the task has not finished).
    """
    steps: dict[tuple[str, int], dict[int, StepRecorded]] = {}
    finished: dict[str, SubTaskFinished] = {}
    approvals: list[str] = []
    status, reason = "running", ""
    async for _kind, event in client.follow(task_id, idle_timeout_s):
        if isinstance(event, StepRecorded):
            steps.setdefault((event.subtask_id, event.attempt), {})[event.step] = event
        elif isinstance(event, SubTaskFinished):
            finished.pop(event.subtask_id, None)
            finished[event.subtask_id] = event
        elif isinstance(event, ApprovalRequested):
            approvals.append(f"{event.subtask_id}: {event.approval_id}")
            if stop_at_approval:
                status, reason = "waiting", f"asked a person to approve ({approvals[-1]})"
                break
        elif isinstance(event, TaskFinished):
            status, reason = event.status.value, event.reason
        elif isinstance(event, TaskRejected):
            status, reason = "rejected", "; ".join(event.errors)
    records: dict[str, SubTaskRecord] = {}
    for subtask_id, end in finished.items():
        numbered = sorted(steps.get((subtask_id, end.attempt), {}).items())
        run = [await _whole(client, step) for _, step in numbered]
        routes = [step.name for step in run if step.step_kind == "model"]
        turns, calls = conversation(run)
        records[subtask_id] = SubTaskRecord(
            subtask_id=subtask_id,
            role=end.role,
            status=end.status.value,
            reason=_scrub(end.reason, task_id),
            output=_scrub(await _output(client, end), task_id),
            steps=end.usage.steps,
            tools=[_tool(step) for step in run if step.step_kind == "tool"],
            tokens=end.usage.input_tokens + end.usage.output_tokens,
            cost_usd=end.usage.cost_usd,
            flags=_scrub(end.flags, task_id),
            model=end.model or (routes[-1] if routes else None),
            turns=_scrub(turns, task_id),
            calls=_scrub(calls, task_id),
        )
    return TaskRecord(
        task_id=task_id,
        status=status,
        reason=_scrub(reason, task_id),
        subtasks=records,
        approvals=approvals,
    )
