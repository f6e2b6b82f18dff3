"""Task state as it is kept in KV `tasks`: written by the orchestrator, read by anyone.

Per task (keys in `subjects`):
    <task>.plan        the accepted `TaskSubmitted` (written once, never changed)
    <task>.meta        `TaskMeta`: status, counts and a bitmap of finished sub-tasks (small)
    <task>.st.<id>     `SubTaskState`: one sub-task's status, satisfied dependencies, output
    <task>.result      the `TaskFinished` event, once the task is over
    <task>.ap.<id>     `ApprovalRecord`: one approval, pending or resolved (`approvals`)
    <task>.planning    `PlanningState`: a goal-only task's planner attempts (planned tasks)
    <task>.planned     the `TaskSubmitted` with the accepted plan (written once, planned tasks)

Bitmaps are base64: setting a bit twice changes nothing, which is what makes replaying an
event harmless.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hivebus.contracts.approvals import ApprovalResolved, ApprovalSummary
from hivebus.contracts.events import PlanningInfo
from hivebus.contracts.limits import Usage
from hivebus.contracts.status import SubTaskStatus, TaskStatus


def bit_is_set(bits: str, index: int) -> bool:
    """Whether bit `index` is set in a base64 bitmap."""
    raw = base64.b64decode(bits) if bits else b""
    return index // 8 < len(raw) and bool(raw[index // 8] & (1 << (index % 8)))


def set_bits(bits: str, size: int, indexes: list[int]) -> tuple[str, int]:
    """The bitmap with `indexes` set, and how many of them were not set before."""
    raw = bytearray(base64.b64decode(bits) if bits else b"")
    raw.extend(b"\0" * ((size + 7) // 8 - len(raw)))
    added = 0
    for index in indexes:
        mask = 1 << (index % 8)
        if not raw[index // 8] & mask:
            raw[index // 8] |= mask
            added += 1
    return base64.b64encode(bytes(raw)).decode(), added


class TaskMeta(BaseModel):
    """The small, often-updated part of a task's state."""

    model_config = ConfigDict(extra="forbid")

    task_id: str
    status: TaskStatus
    total: int = Field(ge=0, description="Number of sub-tasks.")
    finished_bits: str = Field(default="", description="Base64 bitmap of finished sub-tasks.")
    finished: int = Field(default=0, ge=0, description="Count of set bits.")
    submitted_at: datetime
    reason: str = ""
    ending: TaskStatus | None = Field(
        default=None, description="Set by a cancel or the deadline: how the task will end."
    )
    planning: PlanningInfo = Field(
        default_factory=PlanningInfo, description="Whether the plan was given or planned."
    )

    def is_finished(self, index: int) -> bool:
        """Whether sub-task number `index` is already counted as finished."""
        return bit_is_set(self.finished_bits, index)

    def with_finished(self, indexes: list[int]) -> TaskMeta | None:
        """A copy with these sub-tasks marked finished, or None when nothing changes."""
        bits, added = set_bits(self.finished_bits, self.total, indexes)
        if not added:
            return None
        return self.model_copy(update={"finished_bits": bits, "finished": self.finished + added})


class SubTaskState(BaseModel):
    """One sub-task's state."""

    model_config = ConfigDict(extra="forbid")

    id: str
    role: str
    status: SubTaskStatus = SubTaskStatus.PENDING
    attempt: int = 1
    deps_bits: str = Field(
        default="", description="Base64 bitmap over `depends_on` positions: which completed."
    )
    deps_done: int = Field(default=0, ge=0, description="How many dependencies completed.")
    run_id: str | None = None
    reason: str = ""
    blocked_by: str | None = None
    output: Any = None
    output_ref: str | None = Field(
        default=None, description="The `artifacts` object holding a large output whole."
    )
    usage: Usage = Field(default_factory=Usage)
    flags: list[str] = Field(default_factory=list)
    pending_approvals: list[str] = Field(
        default_factory=list, description="Ids of the approvals the paused run waits for."
    )
    approvals: list[ApprovalSummary] = Field(
        default_factory=list, description="Approvals of this sub-task resolved so far."
    )
    resume: list[ApprovalResolved] = Field(
        default_factory=list,
        description="Resolutions of the current pause, handed to the run when it resumes.",
    )
    dispatched_at: datetime | None = Field(
        default=None, description="First dispatch (kept only while tracing): the span's start."
    )
    ended_at: datetime | None = Field(
        default=None, description="When it reached its result (kept only while tracing)."
    )


class PlanningState(BaseModel):
    """A goal-only task's planning: the planner's current attempt and what earlier ones got."""

    model_config = ConfigDict(extra="forbid")

    attempt: int = Field(default=1, ge=1, description="The planner attempt asked for now.")
    status: SubTaskStatus = Field(
        default=SubTaskStatus.PENDING, description="How the current attempt stands."
    )
    run_id: str | None = None
    reason: str = ""
    output: Any = Field(default=None, description="The current attempt's answer, once it came.")
    usage: Usage = Field(
        default_factory=Usage, description="What every finished attempt used, summed."
    )
    rejected: list[list[str]] = Field(
        default_factory=list, description="The errors of each rejected answer, oldest first."
    )
