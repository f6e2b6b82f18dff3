"""Every event on the bus. Each carries an event id, the task id, a timestamp, a schema version."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hivebus.contracts.approvals import (
    ApprovalDecided,
    ApprovalExpired,
    ApprovalRefused,
    ApprovalRequested,
    ApprovalResolved,
    ApprovalSummary,
)
from hivebus.contracts.base import Event
from hivebus.contracts.ids import Identifier, RoleName
from hivebus.contracts.limits import Limits, TaskBudget, Usage
from hivebus.contracts.plan import Plan
from hivebus.contracts.status import SubTaskStatus, TaskStatus


class TaskSubmitted(Event):
    """A client asks for a task to be done."""

    kind: Literal["task_submitted"] = "task_submitted"
    goal: str = Field(min_length=1, max_length=100_000, description="What the task must achieve.")
    plan: Plan | None = Field(default=None, description="An explicit plan; planned when absent.")
    budget: TaskBudget = Field(default_factory=TaskBudget, description="Bounds on the whole task.")
    traceparent: str | None = Field(
        default=None,
        max_length=55,
        description="W3C traceparent of the client's span the task's trace continues; the "
        "orchestrator takes it from the submission's `traceparent` header.",
    )
    replay_of: str | None = Field(
        default=None,
        max_length=55,
        description="A replay of a dead letter: the traceparent of the trace it replays, "
        "which the task's workflow span links to.",
    )


class TaskRejected(Event):
    """A submission that cannot run, with every reason at once."""

    kind: Literal["task_rejected"] = "task_rejected"
    errors: list[str] = Field(min_length=1, description="Every validation error, one per entry.")


class DependencyOutput(BaseModel):
    """The output of a finished dependency, handed to the sub-task that needs it."""

    model_config = ConfigDict(extra="forbid")

    subtask_id: Identifier
    output: Any = Field(default=None, description="The dependency's final output.")
    note: str | None = Field(
        default=None,
        description="A large output is handed over by reference: the knowledge-store note "
        "holding it (read it with kb_read); `output` then holds a preview.",
    )
    output_ref: str | None = Field(
        default=None,
        description="An output too large for one message: the `artifacts` object holding it "
        "whole; `output` then holds a preview.",
    )


class SubTaskAssigned(Event):
    """The orchestrator hands one sub-task to its role's agents."""

    kind: Literal["subtask_assigned"] = "subtask_assigned"
    subtask_id: Identifier
    attempt: int = Field(default=1, ge=1, description="Which attempt at this sub-task.")
    role: RoleName
    goal: str = Field(description="The task's goal, for context.")
    prompt: str
    input: dict[str, Any] = Field(default_factory=dict)
    limits: Limits
    model: str | None = Field(default=None, description="Model route chosen by the plan, if any.")
    output_schema: dict[str, Any] | None = None
    subtask_kind: str | None = Field(default=None, description="The plan's `kind`, for routing.")
    budget: TaskBudget = Field(
        default_factory=TaskBudget, description="The task's budget, shared by all its runs."
    )
    dependencies: list[DependencyOutput] = Field(default_factory=list)
    resume: list[ApprovalResolved] = Field(
        default_factory=list,
        description="A run paused for approvals, dispatched again: the resolution of each.",
    )


class SubTaskStarted(Event):
    """An agent began (or resumed) a run of a sub-task."""

    kind: Literal["subtask_started"] = "subtask_started"
    subtask_id: Identifier
    attempt: int = Field(ge=1)
    run_id: str
    role: RoleName
    model: str = Field(description="The model route the run uses.")
    resumed: str | None = Field(
        default=None,
        description="A run going on after approvals: the last approval its dispatch carries.",
    )


class RetryRecord(BaseModel):
    """One failed attempt inside a step that was tried again."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(description="Model route or tool name.")
    attempt: int = Field(ge=1)
    error: str
    delay_s: float = Field(ge=0, description="Backoff before the next attempt.")


class StepRecorded(Event):
    """One step of a run: a model call or a tool call, with what went in and came out."""

    kind: Literal["step"] = "step"
    subtask_id: Identifier
    attempt: int = Field(ge=1)
    run_id: str
    step: int = Field(ge=1, description="1-based step number within the run.")
    step_kind: Literal["model", "tool"]
    name: str = Field(description="Model route or tool name.")
    input: Any = None
    output: Any = None
    error: str | None = None
    usage: Usage = Field(default_factory=Usage, description="Usage of this step alone.")
    retries: list[RetryRecord] = Field(default_factory=list, description="Attempts retried.")
    duration_s: float | None = Field(
        default=None,
        ge=0,
        description="How long the model call or tool call took, retries included.",
    )
    tier: str | None = Field(default=None, description="A tool step's tier (`read`, ...).")
    notes: list[str] = Field(
        default_factory=list,
        description="What the runtime did around the call: fallbacks, warnings to the model.",
    )
    content_ref: str | None = Field(
        default=None,
        description="A step too large for one message: the `artifacts` object holding its "
        "input and output whole; `input` and `output` then hold previews.",
    )


class SubTaskFinished(Event):
    """The terminal event of a run: no run ends without one."""

    kind: Literal["subtask_finished"] = "subtask_finished"
    subtask_id: Identifier
    attempt: int = Field(ge=1)
    run_id: str
    role: RoleName
    status: SubTaskStatus
    reason: str = Field(description="Why the run ended so, in words a person can act on.")
    output: Any = Field(default=None, description="The final or partial output.")
    output_ref: str | None = Field(
        default=None,
        description="An output too large for one message: the `artifacts` object holding it "
        "whole; `output` then holds a preview.",
    )
    usage: Usage
    limit: str | None = Field(default=None, description="The limit reached, if one was.")
    flags: list[str] = Field(default_factory=list, description="Findings of the output validators.")
    subtask_kind: str | None = Field(
        default=None, description="The plan's `kind` of the sub-task (for `hivebus stats`)."
    )
    model: str | None = Field(
        default=None,
        description="The model route that gave the run's last answer (a fallback's when one "
        "answered); None when no model answered.",
    )


class BudgetWarning(Event):
    """The task has used 80% of its token or cost budget (sent once per task)."""

    kind: Literal["budget_warning"] = "budget_warning"
    used_tokens: int = Field(ge=0)
    max_tokens: int = Field(ge=0)
    used_cost_usd: float = Field(ge=0)
    max_cost_usd: float = Field(ge=0)


class BreakerChanged(Event):
    """A circuit breaker around a model endpoint or a tool changed state."""

    kind: Literal["breaker_changed"] = "breaker_changed"
    subtask_id: Identifier = Field(description="The sub-task whose call caused the change.")
    breaker: str = Field(description="`model:<route>` or `tool:<name>`.")
    old: str
    new: str


class CancelRequested(Event):
    """Stop a task: runs stop at their next step boundary, nothing new is dispatched."""

    kind: Literal["cancel_requested"] = "cancel_requested"
    reason: str = Field(default="cancelled by request", max_length=1000)


class DeadlineReached(Event):
    """A task's deadline: published when the task is accepted, delivered when it is due."""

    kind: Literal["deadline_reached"] = "deadline_reached"
    deadline: datetime


class DeadLetter(Event):
    """Something that could not finish, with what a person needs to understand and replay it."""

    kind: Literal["dead_letter"] = "dead_letter"
    subtask_id: Identifier | None = None
    attempt: int = Field(default=1, ge=1)
    why: str = Field(description="max_deliveries, unrecoverable or deadline.")
    deliveries: int = Field(default=0, ge=0)
    original: Any = Field(default=None, description="The message that could not be processed.")
    checkpoint: Any = Field(default=None, description="The run's last checkpoint, if any.")
    usage: Usage = Field(default_factory=Usage)
    errors: list[str] = Field(default_factory=list, description="The error chain, oldest first.")


class NoteCommitted(Event):
    """A write to the knowledge store became a commit."""

    kind: Literal["note_committed"] = "note_committed"
    write_id: str | None = Field(default=None, description="The write this commit applied.")
    subtask_id: str | None = None
    path: str
    revision: str = Field(description="Blob revision of the note now.")
    commit: str
    author: str


class SubTaskSummary(BaseModel):
    """How one sub-task ended, as reported in `TaskFinished`."""

    model_config = ConfigDict(extra="forbid")

    id: Identifier
    role: RoleName
    status: SubTaskStatus
    reason: str = ""
    blocked_by: str | None = Field(
        default=None, description="The failed sub-task at the root of a block."
    )
    usage: Usage = Field(default_factory=Usage)
    output: Any = None
    flags: list[str] = Field(default_factory=list)
    approvals: list[ApprovalSummary] = Field(
        default_factory=list, description="Every approval the sub-task asked for, resolved."
    )


PLANNING_SUBTASK = "hivebus-plan"
"""The id of a task's planning sub-task (reserved: a plan may not use it)."""


class PlanningInfo(BaseModel):
    """Where a task's plan came from, and what making it took."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["given", "planned"] = Field(
        default="given", description="`given` in the submission, or `planned` from its goal."
    )
    generation: int = Field(
        default=1, ge=0, description="Plans accepted so far (0 while the first is being made)."
    )
    corrections: int = Field(
        default=0, ge=0, description="Planner answers rejected and sent back with their errors."
    )
    revisions: int = Field(default=0, ge=0, description="Revised plans made after a failure.")
    superseded: list[str] = Field(
        default_factory=list,
        description="Sub-tasks a revision replaced: they ended without completing (or were "
        "blocked by one that did). They stay in `subtasks`, but the task's status and output "
        "come from the rest.",
    )
    reviews: list[str] = Field(
        default_factory=list,
        description="Each plan a person reviewed (`planning.review`): generation, decision, who.",
    )


class PlanReady(Event):
    """A planner's plan passed every check: it is stored and its sub-tasks are dispatched."""

    kind: Literal["plan_ready"] = "plan_ready"
    generation: int = Field(ge=1, description="1 for the first plan of the task.")
    plan: Plan = Field(
        description="The plan; for a revision (generation 2 on) only the sub-tasks it adds."
    )
    corrections: int = Field(ge=0, description="Answers rejected before this one.")
    kept: list[str] = Field(
        default_factory=list, description="A revision: the completed sub-tasks it keeps."
    )
    replaced: list[str] = Field(
        default_factory=list,
        description="A revision: the sub-tasks it replaces (ended without completing, or blocked).",
    )
    reviewed_by: str | None = Field(
        default=None, description="Who approved (or edited) the plan, with `planning.review`."
    )


class PlanRejected(Event):
    """A planner's answer failed the plan checks: sent back with its errors, or the last one."""

    kind: Literal["plan_rejected"] = "plan_rejected"
    attempt: int = Field(ge=1, description="The planner attempt whose answer this was.")
    errors: list[str] = Field(min_length=1, description="Every reason it is not a valid plan.")
    retrying: bool = Field(description="True when the planner is asked again; False: the end.")


class TaskFinished(Event):
    """The end of a task: status, final output, usage and a summary of every sub-task."""

    kind: Literal["task_finished"] = "task_finished"
    status: TaskStatus
    reason: str
    degraded: bool = Field(default=False, description="True when the output is partial.")
    output: Any = Field(default=None, description="Outputs of the final sub-tasks, by id.")
    usage: Usage
    subtasks: list[SubTaskSummary]
    result_ref: str | None = Field(
        default=None,
        description="A result too large for one message: the `artifacts` object holding this "
        "event whole; `output` then holds a preview and `subtasks` only the ones that did not "
        "complete, as far as they fit.",
    )
    planning: PlanningInfo = Field(
        default_factory=PlanningInfo, description="Whether the plan was given or planned."
    )


EVENT_MODELS: tuple[type[Event], ...] = (
    TaskSubmitted,
    TaskRejected,
    SubTaskAssigned,
    SubTaskStarted,
    StepRecorded,
    SubTaskFinished,
    TaskFinished,
    PlanReady,
    PlanRejected,
    BudgetWarning,
    BreakerChanged,
    CancelRequested,
    DeadlineReached,
    DeadLetter,
    NoteCommitted,
    ApprovalRequested,
    ApprovalDecided,
    ApprovalResolved,
    ApprovalRefused,
    ApprovalExpired,
)
"""Every event model, for schema export and decoding."""


EVENTS_BY_KIND: dict[str, type[Event]] = {
    model.model_fields["kind"].default: model for model in EVENT_MODELS
}
"""Every event model by its `kind` (the last token of its subject on EVENTS), for decoding."""
