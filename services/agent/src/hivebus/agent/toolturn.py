"""One turn of tool calls: the calls of one model answer, run in order, checkpointed after each.

for each call not run yet (`pending_calls`):
    the task was cancelled                    -> stop `cancelled`
    a limit reached                           -> every call left is answered "not run", the
                                                 turn closes, stop at the limit
    the same call a third time in a row       -> stop `loop_detected` (warned at the second)
    otherwise                                 -> run it; its result joins `outcomes`
all calls run                                 -> their results go back to the model as one turn,
                                                 and the run moves to phase `model`

A call's idempotency key is `run:step:call`: a resumed run gives it the same key again.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from hivebus.agent.answers import runtime_note
from hivebus.agent.limits import LimitHit, check_limits
from hivebus.agent.reporting import StepReporter, count_step
from hivebus.agent.runcontext import RunContext
from hivebus.agent.tool import ToolContext
from hivebus.contracts import (
    Message,
    SubTaskAssigned,
    SubTaskStatus,
    ToolCall,
    ToolErrorKind,
    ToolOutcome,
    ToolResult,
)
from hivebus.contracts.runs import RunCheckpoint, RunPhase

LOOP_WARN_AT = 2
"""The same call this many times in a row: the model is warned once."""
LOOP_END_AT = 3
"""The same call this many times in a row: the run ends `loop_detected`, the call not run."""


def call_signature(name: str, args: Any) -> str:
    """A canonical form of a call, to recognise the same call with the same arguments."""
    return f"{name}:{json.dumps(args, sort_keys=True, default=str)}"


@dataclass(frozen=True)
class TurnStop:
    """Why a turn of tool calls ends the run; `hit` names the limit when one was reached."""

    status: SubTaskStatus
    reason: str
    hit: LimitHit | None = None


class ToolTurn:
    """Runs the current turn's remaining tool calls on the run's checkpoint."""

    def __init__(
        self,
        assignment: SubTaskAssigned,
        ctx: RunContext,
        state: RunCheckpoint,
        reporter: StepReporter,
        *,
        wall: Callable[[], float],
        save: Callable[[], Awaitable[None]],
    ) -> None:
        """Work on `state`; `wall` is the run's wall time so far, `save` checkpoints it."""
        self.assignment = assignment
        self.ctx = ctx
        self.state = state
        self.reporter = reporter
        self.wall = wall
        self.save = save

    def _time_left(self) -> float:
        return self.assignment.limits.max_wall_s - self.wall()

    async def run(self) -> TurnStop | None:
        """Run every pending call; None when the turn is done and the model is next."""
        state = self.state
        while state.pending_calls:
            call = state.pending_calls[0]
            if self.ctx.cancelled is not None and await self.ctx.cancelled():
                return TurnStop(SubTaskStatus.CANCELLED, "the task was cancelled")
            hit = check_limits(self.assignment.limits, state.usage, self.wall(), tool_call=True)
            if hit is not None:
                self._close_not_run()
                return TurnStop(SubTaskStatus.BUDGET_EXCEEDED, hit.reason(), hit)
            signature = call_signature(call.name, call.args)
            state.repeats = state.repeats + 1 if signature == state.last_call else 1
            state.last_call = signature
            if state.repeats >= LOOP_END_AT:
                return TurnStop(
                    SubTaskStatus.LOOP_DETECTED,
                    f"{call.name} called {state.repeats} times in a row with the same arguments",
                )
            result = await self._step(call)
            state.outcomes.append(ToolOutcome(call_id=call.id, name=call.name, result=result))
            state.pending_calls.pop(0)
            if state.repeats == LOOP_WARN_AT and not state.loop_warned:
                state.loop_warned = True
                state.pending_warning = (
                    f"You called {call.name} twice in a row with the same arguments; the result "
                    "will not change. Do something different or give your final answer; a third "
                    "identical call ends the run."
                )
            if state.pending_calls:
                await self.save()
        self._close()
        if state.pending_warning:
            state.messages.append(runtime_note(state.pending_warning))
            state.pending_warning = None
        await self.save()
        return None

    def _close(self) -> None:
        """Hand the turn's results to the model; the model is next."""
        self.state.messages.append(Message(role="tool", tool_results=self.state.outcomes))
        self.state.outcomes = []
        self.state.phase = RunPhase.MODEL

    def _close_not_run(self) -> None:
        """Answer every requested call (the API requires it), marking the ones not run."""
        not_run = ToolResult.failure(
            ToolErrorKind.DENIED, "not run: a limit was reached", "give your final answer"
        )
        self.state.outcomes.extend(
            ToolOutcome(call_id=call.id, name=call.name, result=not_run)
            for call in self.state.pending_calls
        )
        self.state.pending_calls = []
        self._close()

    async def _step(self, call: ToolCall) -> ToolResult:
        state = self.state
        number = state.usage.steps + 1
        context = ToolContext(
            workspace=self.ctx.workspace,
            task_id=self.assignment.task_id,
            subtask_id=self.assignment.subtask_id,
            run_id=state.run_id,
            step=number,
            idempotency_key=f"{state.run_id}:{number}:{call.id}",
            options=self.ctx.tool_options,
            clients=self.ctx.tool_clients,
            role=self.assignment.role,
        )
        step = await self.ctx.tools.call(call.name, call.args, context, self._time_left)
        own = count_step(state.usage, tool_call=True, retries=len(step.retries))
        result = step.result
        state.sources.append(json.dumps(result.data, default=str) if result.ok else "")
        await self.reporter.step(
            "tool",
            number=number,
            name=call.name,
            step_input=call.args,
            step_output=result.model_dump(mode="json"),
            error=None if result.ok or result.error is None else result.error.message,
            usage=own,
            retries=step.retries,
        )
        return result
