"""A run's checkpoint: the whole state of one agent run, written to KV `runs` after every step.

The agent loop works on this object directly (there is no second copy of its state), and other
services read it: the orchestrator puts the last checkpoint in a dead letter, the console shows
it and replays from it.

    phase model     the next step asks the model
    phase tools     the current turn's tool calls are being run: `pending_calls` not run yet,
                    `outcomes` of the ones already run
    phase awaiting_approval
                    paused before a step a person must allow (`approvals`): the work
                    message was acked; a dispatch carrying the resolutions resumes it
    phase finished  the terminal event is decided and kept in `finished`; a redelivery
                    publishes it again instead of running anything

`trace` is the run span (`invoke_agent`) of the delivery that holds the run, when tracing is
on: the next delivery links its own run span to it, and records it first when `ended` says
its worker stopped before the run did.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from hivebus.contracts.approvals import ApprovalRequested, ApprovalResolved
from hivebus.contracts.conversation import Message, ToolCall, ToolOutcome
from hivebus.contracts.events import SubTaskFinished
from hivebus.contracts.limits import Usage


class RunPhase(StrEnum):
    """Where a run is between two steps."""

    MODEL = "model"
    TOOLS = "tools"
    AWAITING_APPROVAL = "awaiting_approval"
    FINISHED = "finished"


class PendingApproval(BaseModel):
    """One approval a paused run asked for, and its resolution once it came with a dispatch."""

    model_config = ConfigDict(extra="forbid")

    request: ApprovalRequested
    resolution: ApprovalResolved | None = None
    applied: bool = Field(
        default=False, description="The resolution was acted on (the call ran or was answered)."
    )


class RunTrace(BaseModel):
    """The run span of one delivery of a run (W3C ids), for the delivery that resumes the run."""

    model_config = ConfigDict(extra="forbid")

    traceparent: str = Field(description="The `traceparent` of the run span (`invoke_agent`).")
    parent: str | None = Field(
        default=None, description="The `traceparent` of its parent (the sub-task's span), if any."
    )
    start_ns: int = Field(ge=0, description="When the span started (epoch nanoseconds).")
    ended: bool = Field(
        default=False,
        description="The span was ended (and exported) by its worker: saved with the run's "
        "pause or its terminal event. False in a later delivery: the worker stopped first, so "
        "that delivery records the span, ended then, before linking to it.",
    )


class RunCheckpoint(BaseModel):
    """Everything a run needs to continue where it stopped, and what it did so far."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    owner: str = Field(default="", description="The worker delivery that holds the run now.")
    phase: RunPhase = RunPhase.MODEL
    messages: list[Message] = Field(default_factory=list)
    pending_calls: list[ToolCall] = Field(
        default_factory=list, description="Tool calls of the current turn not run yet."
    )
    outcomes: list[ToolOutcome] = Field(
        default_factory=list, description="Results of the current turn's calls already run."
    )
    pending_warning: str | None = Field(
        default=None, description="A runtime note to the model, sent after the current turn."
    )
    usage: Usage = Field(default_factory=Usage)
    wall_s: float = Field(default=0.0, ge=0, description="Wall-clock seconds used until now.")
    sources: list[str] = Field(
        default_factory=list, description="Texts the run was given or saw, for validators."
    )
    last_text: str | None = Field(default=None, description="The model's latest text.")
    corrections: int = Field(default=0, ge=0, description="Output-schema corrections asked.")
    soft_warned: list[str] = Field(
        default_factory=list, description="Limits the model was already told are near."
    )
    last_call: str | None = Field(default=None, description="Signature of the last tool call.")
    repeats: int = Field(default=0, ge=0, description="Times `last_call` came in a row.")
    loop_warned: bool = False
    turn_step: int = Field(
        default=0, ge=0, description="The model step whose tool calls are `pending_calls`."
    )
    approvals: list[PendingApproval] = Field(
        default_factory=list,
        description="Approvals of this run: asked at the current pause, or resolved before.",
    )
    spend_approved_at: float | None = Field(
        default=None, description="The task-budget fraction a person allowed going past."
    )
    finished: SubTaskFinished | None = Field(
        default=None, description="The terminal event, once decided (phase `finished`)."
    )
    model: str | None = Field(
        default=None,
        description="The model route that gave the latest answer (a fallback's when one "
        "answered); None until a model answered.",
    )
    trace: RunTrace | None = Field(
        default=None,
        description="The run span of the delivery holding the run (None when tracing is off).",
    )
    stored_ref: str | None = Field(
        default=None,
        description="A checkpoint too large for one message: the `artifacts` object holding "
        "it whole; this one then carries only its ids, phase and usage.",
    )
