"""What a run is given besides its assignment and its checkpoint, and how a new run starts."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hivebus.agent.answers import build_prompt
from hivebus.agent.approvals import ApprovalPolicy
from hivebus.agent.modelcall import ModelCaller
from hivebus.agent.toolstep import ToolRunner
from hivebus.agent.validators import OutputValidator
from hivebus.contracts import Message, SubTaskAssigned
from hivebus.contracts.runs import RunCheckpoint, RunPhase
from hivebus.core import Clock, EventSink


@dataclass
class RunContext:
    """The role's prompt, its model chain and tools, and where the run reports and checkpoints."""

    system: str
    caller: ModelCaller
    tools: ToolRunner
    workspace: Path
    clock: Clock
    events: EventSink
    validators: list[OutputValidator] = field(default_factory=list)
    output_retries: int = 2
    tool_options: dict[str, Any] = field(default_factory=dict)
    tool_clients: dict[str, Any] = field(default_factory=dict)
    checkpoint: Callable[[RunCheckpoint], Awaitable[None]] | None = None
    """Called with the run's state after every step (may raise `RunFencedError`)."""
    cancelled: Callable[[], Awaitable[bool]] | None = None
    """Asked at every step boundary: True stops the run `cancelled`."""
    approvals: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    """The role's approval settings (which tiers need approval is the toolbox's policy)."""


def new_run_id() -> str:
    """A short unique id for one run."""
    return uuid.uuid4().hex[:12]


def new_run(assignment: SubTaskAssigned, run_id: str | None = None) -> RunCheckpoint:
    """The state of a run that has done nothing yet: the first user turn, about to ask the model."""
    prompt = build_prompt(assignment)
    return RunCheckpoint(
        run_id=run_id or new_run_id(),
        phase=RunPhase.MODEL,
        messages=[Message(role="user", text=prompt)],
        sources=[prompt],
    )
