"""A harness for approval tests: one sub-task's runs through the real loop, paused and resumed.

It does what the service does around the loop (`AgentService.execute`), without a bus: a run
that pauses gives back its `RunPaused`; a resume attaches the resolutions to the checkpoint
and runs the loop again. Checkpoints are kept in order (`saved`); events are collected.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from hivebus.agent.approvals import ApprovalPolicy, RunPaused, attach
from hivebus.agent.checkpoint import CheckpointUnavailableError
from hivebus.agent.loop import AgentLoop, RunContext, RunOutcome, new_run
from hivebus.agent.modelcall import BudgetGate, ModelCaller
from hivebus.agent.models.base import ModelRequest, ModelResponse, TurnUsage
from hivebus.agent.tool import Tool
from hivebus.agent.toolbox import Toolbox
from hivebus.agent.toolstep import ToolRunner
from hivebus.contracts import (
    ApprovalRefused,
    ApprovalRequested,
    ApprovalResolved,
    Decision,
    Limits,
    SubTaskAssigned,
    TaskBudget,
    Tier,
    ToolCall,
    ToolOutcome,
)
from hivebus.contracts.runs import RunCheckpoint
from hivebus.core import Price
from hivebus.core.budget import BudgetLedger, MemoryLedgerStore
from hivebus.core.reliability import BreakerPolicy, BreakerRegistry, RetryPolicy

from .fakes import CollectingSink, FakeClock, FunctionModel, assistant_turns

TASK, SUBTASK, RUN_ID = "task-1", "sub-1", "run1"
FREE = Price(input_per_mtok=0.0, output_per_mtok=0.0)


class Crash(CheckpointUnavailableError):  # noqa: N818 - a simulated process death
    """Raised by the checkpoint hook as a SIGKILL would stop the run: it escapes `run()`."""


def turns(
    *answers: ModelResponse | list[ToolCall] | str, usage: TurnUsage | None = None
) -> FunctionModel:
    """A model answering the conversation's n-th assistant turn with the n-th answer.

    Each answer reports `usage`, which is also what each call reserves (its bound).
    """
    used = usage or TurnUsage()
    responses = [
        a
        if isinstance(a, ModelResponse)
        else ModelResponse(text=a)
        if isinstance(a, str)
        else ModelResponse(tool_calls=a)
        for a in answers
    ]
    for response in responses:
        response.usage = used

    async def respond(request: ModelRequest) -> ModelResponse:
        return responses[assistant_turns(request)].model_copy(deep=True)

    return FunctionModel(respond, bound=used)


def assignment(budget: TaskBudget | None = None) -> SubTaskAssigned:
    """The sub-task every approval test runs."""
    return SubTaskAssigned(
        task_id=TASK,
        subtask_id=SUBTASK,
        role="mailer",
        goal="Answer the customer.",
        prompt="Reply to the customer.",
        limits=Limits(max_steps=30, max_tool_calls=20),
        budget=budget or TaskBudget(),
    )


@dataclass
class Harness:
    """The runs of one sub-task: its tools, policy, model, ledger; what it saved and published."""

    workspace: Path
    model: FunctionModel
    tools: Sequence[Tool]
    tiers: Sequence[Tier] = (Tier.READ, Tier.WRITE_SAFE)
    approve: Sequence[Tier] = (Tier.WRITE_RISKY,)
    policy: ApprovalPolicy = field(default_factory=ApprovalPolicy)
    price: Price = field(default_factory=lambda: FREE)
    budget: TaskBudget = field(default_factory=TaskBudget)
    clock: FakeClock = field(default_factory=FakeClock)
    ledger: MemoryLedgerStore = field(default_factory=MemoryLedgerStore)
    sink: CollectingSink = field(default_factory=CollectingSink)
    saved: list[RunCheckpoint] = field(default_factory=list)
    crash_at: int | None = None
    """Crash at this save (counted over all saves of the harness)."""

    @property
    def task(self) -> SubTaskAssigned:
        """The assignment, with this harness's budget."""
        return assignment(self.budget)

    def context(self) -> RunContext:
        """A fresh run context, as a worker builds one for a delivery."""
        breakers = BreakerRegistry(BreakerPolicy(), self.clock)
        no_retry = RetryPolicy(attempts=1)

        async def checkpoint(state: RunCheckpoint) -> None:
            self.saved.append(state.model_copy(deep=True))
            if self.crash_at is not None and len(self.saved) == self.crash_at:
                raise Crash

        return RunContext(
            system="You answer customers.",
            caller=ModelCaller(
                [self.model],
                breakers=breakers,
                retry=no_retry,
                price_for=lambda _: self.price,
                budget=BudgetGate(BudgetLedger(self.ledger), TASK, self.budget, "sub-1:1"),
                events=self.sink,
            ),
            tools=ToolRunner(
                Toolbox(self.tools, self.tiers, approve_tiers=self.approve),
                breakers=breakers,
                retry=no_retry,
            ),
            workspace=self.workspace,
            clock=self.clock,
            events=self.sink,
            checkpoint=checkpoint,
            approvals=self.policy,
        )

    async def run(self, state: RunCheckpoint | None = None) -> RunOutcome | RunPaused:
        """Run from `state` (a new run if None) until it ends or pauses."""
        state = state if state is not None else new_run(self.task, RUN_ID)
        try:
            return await AgentLoop(self.task, self.context(), state).run()
        except RunPaused as paused:
            return paused

    async def resume(
        self, resolutions: Iterable[ApprovalResolved], state: RunCheckpoint | None = None
    ) -> RunOutcome | RunPaused:
        """Resume the last checkpoint (or `state`) with `resolutions`, as a dispatch does."""
        state = (state or self.saved[-1]).model_copy(deep=True)
        still = attach(state, resolutions)
        if still:
            return RunPaused(still)
        return await self.run(state)

    def published(self, kind: type[BaseModel]) -> list[Any]:
        """The non-step events of one type published so far."""
        return [event for event in self.sink.side if isinstance(event, kind)]

    @property
    def refusals(self) -> list[ApprovalRefused]:
        """The approvals refused at resume."""
        return self.published(ApprovalRefused)


def resolution(
    request: ApprovalRequested,
    decision: Decision,
    *,
    by: str = "alice",
    reason: str = "",
    arguments: dict[str, Any] | None = None,
    answer: str | None = None,
    timed_out: bool = False,
    decided_at: datetime | None = None,
) -> ApprovalResolved:
    """The orchestrator's resolution of `request` (decided a second before it expires)."""
    return ApprovalResolved(
        task_id=request.task_id,
        approval_id=request.approval_id,
        subtask_id=request.subtask_id,
        attempt=request.attempt,
        decision=decision,
        by=by,
        reason=reason,
        arguments=arguments,
        answer=answer,
        timed_out=timed_out,
        decision_event_id=None if timed_out else f"decided-{request.approval_id}",
        decided_at=decided_at or request.expires_at - timedelta(seconds=1),
        expires_at=request.expires_at,
    )


def paused(result: RunOutcome | RunPaused) -> RunPaused:
    """The pause a run gave back (fails the test if it ended instead)."""
    assert isinstance(result, RunPaused), result
    return result


def ended(result: RunOutcome | RunPaused) -> RunOutcome:
    """The outcome a run gave back (fails the test if it paused instead)."""
    assert isinstance(result, RunOutcome), result
    return result


def results_seen(model: FunctionModel, turn: int) -> dict[str, ToolOutcome]:
    """The tool results the model was given in the request of its `turn`-th answer (0-based)."""
    [request] = [r for r in model.requests if assistant_turns(r) == turn][-1:]
    outcomes = [o for m in request.messages if m.role == "tool" for o in m.tool_results]
    return {o.call_id: o for o in outcomes}
