"""Task state as it is kept in KV `tasks`: written by the orchestrator, read by anyone.

Per task (keys in `subjects`):
    <task>.plan        the accepted `TaskSubmitted` (written once, never changed)
    <task>.meta        `TaskMeta`: status, counts and a bitmap of finished sub-tasks (small)
    <task>.st.<id>     `SubTaskState`: one sub-task's status, satisfied dependencies, output
    <task>.result      the `TaskFinished` event, once the task is over
    <task>.ap.<id>     `ApprovalRecord`: one approval, pending or resolved (`approvals`)
    <task>.planning    `PlanningState`: the planner's attempts (planned or re-planned tasks)
    <task>.planned     the `TaskSubmitted` with the accepted plan (written once, planned tasks)
    <task>.revised     `RevisedPlan`: the latest revision of the plan, after a failure (replan)

Bitmaps are base64: setting a bit twice changes nothing, which is what makes replaying an
event harmless.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hivebus.contracts.approvals import ApprovalResolved, ApprovalSummary
from hivebus.contracts.events import PlanningInfo, TaskSubmitted
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
    """A task's planning: the plan generation being made and the planner's attempts at it.

    Generation 1 is a goal-only task's first plan; each revision after a failure
    (`planning.replan`) is the next generation.
    """

    model_config = ConfigDict(extra="forbid")

    generation: int = Field(default=1, ge=1, description="The plan generation being made.")

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
        default_factory=list,
        description="The errors of each rejected answer of this generation, oldest first.",
    )
    corrections: int = Field(
        default=0, ge=0, description="Answers rejected in earlier generations."
    )
    review: str | None = Field(
        default=None, description="The approval a person decides the answer's plan by."
    )
    gave_up: bool = Field(
        default=False,
        description="This revision will not be made (no valid plan, the run failed, or a "
        "person rejected it): the task ends as it stood.",
    )


class RevisedPlan(BaseModel):
    """A task's plan after its latest revision (KV `<task>.revised`).

    It holds every sub-task of the plan before, in order, and the revision's new ones after
    them, so a sub-task keeps its index (and its bit in `TaskMeta.finished_bits`) for good.
    """

    model_config = ConfigDict(extra="forbid")

    generation: int = Field(ge=2, description="The plan generation: 2 for the first revision.")
    base_size: int = Field(ge=1, description="How many sub-tasks came before this revision's.")
    submission: TaskSubmitted = Field(description="The submission with the whole plan.")
