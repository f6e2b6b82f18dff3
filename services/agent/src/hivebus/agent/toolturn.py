"""One turn of tool calls: the calls of one model answer, run in order, checkpointed after each.

for each call not run yet (`pending_calls`):
    the task was cancelled                    -> stop `cancelled`
    a limit reached                           -> every call left is answered "not run", the
                                                 turn closes, stop at the limit
    the same call a third time in a row       -> stop `loop_detected` (warned at the second)
    it needs a person, and nobody decided     -> pause: every call left in the turn that needs
                                                 a person is asked at once (`RunPaused`); the
                                                 calls before it ran, none after it did
    a person decided (a resumed run)          -> the decision applies (`resume.py`)
    otherwise                                 -> run it; its result joins `outcomes`
all calls run                                 -> their results go back to the model as one turn,
                                                 and the run moves to phase `model`

Each call run is an `execute_tool` span (`tracing.tool`). A call's idempotency key is
`run:step:call`: a resumed run gives it the same key again, and so does an approved or
modified call, however long the run waited for the decision.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hivebus.agent.answers import runtime_note
from hivebus.agent.approvals import (
    QUESTION_DECISIONS,
    Asking,
    RunPaused,
    expiry,
    find,
    pause,
    request,
)
from hivebus.agent.limits import LimitHit, check_limits
from hivebus.agent.reporting import StepReporter, count_step, report_refusal
from hivebus.agent.resume import answered, recheck, refusal_result, refused, rejected
from hivebus.agent.runcontext import RunContext
from hivebus.agent.tiers import TierDecision
from hivebus.agent.tool import ToolContext
from hivebus.agent.tracing import tool_span
from hivebus.agent.validators.secrets import redact_secrets
from hivebus.contracts import (
    ApprovalKind,
    ApprovalRequested,
    Decision,
    Message,
    RetryRecord,
    SubTaskAssigned,
    SubTaskStatus,
    ToolCall,
    ToolErrorKind,
    ToolOutcome,
    ToolResult,
    approval_id,
)
from hivebus.contracts.approvals import arguments_diff
from hivebus.contracts.runs import PendingApproval, RunCheckpoint, RunPhase

LOOP_WARN_AT = 2
"""The same call this many times in a row: the model is warned once."""
LOOP_END_AT = 3
"""The same call this many times in a row: the run ends `loop_detected`, the call not run."""

NOT_RUN_AT_LIMIT = "not run: a limit was reached"

SAID_CHARS = 2000
"""How much of the model's text beside its calls a request quotes as the model's reason."""


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
        """Run every pending call; None when the turn is done and the model is next.

        Raises:
            RunPaused: a call needs a person; the pause is checkpointed.
        """
        state = self.state
        while state.pending_calls:
            call = state.pending_calls[0]
            if self.ctx.cancelled is not None and await self.ctx.cancelled():
                return TurnStop(SubTaskStatus.CANCELLED, "the task was cancelled")
            hit = check_limits(self.assignment.limits, state.usage, self.wall(), tool_call=True)
            if hit is not None:
                self.close_not_run(NOT_RUN_AT_LIMIT)
                return TurnStop(SubTaskStatus.BUDGET_EXCEEDED, hit.reason(), hit)
            signature = call_signature(call.name, call.args)
            repeats = state.repeats + 1 if signature == state.last_call else 1
            if repeats >= LOOP_END_AT:
                state.repeats, state.last_call = repeats, signature
                return TurnStop(
                    SubTaskStatus.LOOP_DETECTED,
                    f"{call.name} called {repeats} times in a row with the same arguments",
                )
            approval = await self._approval_of(call)  # pauses here when nobody decided yet
            state.repeats, state.last_call = repeats, signature
            if approval is None:
                result = await self._step(call, call.args)
            else:
                result = await self._decided(call, approval)
                approval.applied = True  # saved below, with the call's outcome
            state.outcomes.append(ToolOutcome(call_id=call.id, name=call.name, result=result))
            state.pending_calls.pop(0)
            if state.repeats == LOOP_WARN_AT and not state.loop_warned:
                state.loop_warned = True
                self._note(
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

    def _note(self, text: str) -> None:
        """A note to the model after this turn's results (several join in one)."""
        before = self.state.pending_warning
        self.state.pending_warning = f"{before}\n{text}" if before else text

    def _close(self) -> None:
        """Hand the turn's results to the model; the model is next."""
        self.state.messages.append(Message(role="tool", tool_results=self.state.outcomes))
        self.state.outcomes = []
        self.state.phase = RunPhase.MODEL

    def close_not_run(self, why: str) -> None:
        """Answer every call left (the API requires it), marking it not run, and say `why`."""
        not_run = ToolResult.failure(ToolErrorKind.DENIED, why, "give your final answer")
        self.state.outcomes.extend(
            ToolOutcome(call_id=call.id, name=call.name, result=not_run)
            for call in self.state.pending_calls
        )
        self.state.pending_calls = []
        self._close()

    # -- approvals -----------------------------------------------------------------------

    def _approval_id(self, call: ToolCall) -> str:
        a = self.assignment
        return approval_id(a.task_id, a.subtask_id, a.attempt, self.state.turn_step, call.id)

    def _needs_person(self, call: ToolCall) -> bool:
        """Whether the call waits for a person: its policy says so and its arguments fit.

        A call that would fail anyway (unknown tool, denied, invalid arguments) is not asked
        about: it runs into its structured error at once.
        """
        toolbox = self.ctx.tools.toolbox
        return (
            toolbox.decide(call.name) is TierDecision.APPROVE
            and toolbox.invalid(call.name, call.args) is None
        )

    async def _approval_of(self, call: ToolCall) -> PendingApproval | None:
        """The decided approval of `call`, None if it needs none; pauses if nobody decided."""
        found = find(self.state, self._approval_id(call))
        if found is not None and found.resolution is not None:
            return found
        if found is None and not self._needs_person(call):
            return None
        raise await self._pause()

    async def _pause(self) -> RunPaused:
        """Ask about every call left in the turn that needs a person; checkpoint; to raise."""
        state = self.state
        asking = [
            call
            for call in state.pending_calls
            if self._needs_person(call) and find(state, self._approval_id(call)) is None
        ]
        paused = pause(state, [self._request(call) for call in asking])
        await self.save()
        return paused

    def _request(self, call: ToolCall) -> ApprovalRequested:
        tool = self.ctx.tools.toolbox.tools[call.name]
        policy = self.ctx.approvals
        args = call.args if isinstance(call.args, dict) else {}
        question = args.get("question") if tool.asks_human else None
        rule = self.ctx.tools.toolbox.tiers.rule(call.name, tool.tier, asks_human=tool.asks_human)
        said = next((m.text for m in reversed(self.state.messages) if m.role == "assistant"), None)
        said = said[:SAID_CHARS] if said else None
        asking = Asking(
            kind=ApprovalKind.QUESTION if tool.asks_human else ApprovalKind.TOOL_CALL,
            tool=call.name,
            call_id=call.id,
            decisions=QUESTION_DECISIONS if tool.asks_human else policy.decisions,
            reason=redact_secrets(f"{rule}; the model said: {said}" if said else rule),
            tier=tool.tier,
            arguments=redact_secrets(args),
            args_schema=tool.input_schema(),
            question=redact_secrets(str(question)) if question is not None else None,
        )
        expires = expiry(self.ctx.clock.now(), policy)
        return request(self.assignment, self.state.run_id, self.state.turn_step, asking, expires)

    async def _decided(self, call: ToolCall, approval: PendingApproval) -> ToolResult:
        """Apply a person's decision to `call`, after the re-checks of the resume."""
        asked, resolution = approval.request, approval.resolution
        assert resolution is not None  # noqa: S101 - `_approval_of` returns decided ones only
        refusal = recheck(asked, resolution, self.ctx.tools.toolbox.decide(call.name))
        if refusal is not None:
            await report_refusal(self.ctx.events, refused(approval, refusal))
            return await self._record(call.name, call.args, refusal_result(asked, refusal))
        if resolution.decision is Decision.APPROVE:
            return await self._step(call, call.args, approved=True)
        if resolution.decision is Decision.MODIFY and resolution.arguments is not None:
            before = call.args if isinstance(call.args, dict) else {}
            changed = json.dumps(arguments_diff(before, resolution.arguments), default=str)
            self._note(
                f"{resolution.by} changed the arguments of {call.name} ({call.id}) before it "
                f"ran: {redact_secrets(changed)}"
            )
            return await self._step(call, resolution.arguments, approved=True)
        if resolution.decision is Decision.RESPOND:
            return await self._record(call.name, call.args, answered(resolution))
        return await self._record(call.name, call.args, rejected(asked, resolution))

    # -- running and recording -----------------------------------------------------------

    async def _step(self, call: ToolCall, args: Any, *, approved: bool = False) -> ToolResult:
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
        found = self.ctx.tools.toolbox.tools.get(call.name)
        tier = found.tier.value if found is not None else None
        began = time.monotonic()
        with tool_span(call, args, key=context.idempotency_key, tier=tier) as span:
            step = await self.ctx.tools.call(
                call.name, args, context, self._time_left, approved=approved
            )
            span.result(step.result)
        took = time.monotonic() - began
        return await self._record(
            call.name, args, step.result, step.retries, duration_s=took, tier=tier
        )

    async def _record(
        self,
        name: str,
        args: Any,
        result: ToolResult,
        retries: Sequence[RetryRecord] = (),
        *,
        duration_s: float | None = None,
        tier: str | None = None,
    ) -> ToolResult:
        """Count one tool step and report it: a call run, or one a person's decision answered."""
        state = self.state
        number = state.usage.steps + 1
        own = count_step(state.usage, tool_call=True, retries=len(retries))
        state.sources.append(json.dumps(result.data, default=str) if result.ok else "")
        await self.reporter.step(
            "tool",
            number=number,
            name=name,
            step_input=args,
            step_output=result.model_dump(mode="json"),
            error=None if result.ok or result.error is None else result.error.message,
            usage=own,
            retries=list(retries),
            duration_s=duration_s,
            tier=tier,
        )
        return result
