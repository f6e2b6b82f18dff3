"""The bounded agent loop: every path ends in an explicit status with usage and output.

    check limits (80%: tell the model to wrap up) -> model step -> tool calls -> repeat
    final answer, valid against the output schema   -> completed
    invalid answer, corrections left                -> the errors go back to the model
    invalid answer, no corrections left             -> failed (invalid_output), last attempt kept
    a limit reached                                 -> budget_exceeded, the limit named,
                                                       partial output kept (after one last
                                                       turn without tools when tool calls ran out)
    the task budget cannot cover the next call      -> budget_exceeded
    the same tool call a third time in a row        -> loop_detected (warned at the second)
    no model of the chain can answer                -> failed
Output validators run on whatever output leaves the run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hivebus.agent.answers import build_prompt, parse_output
from hivebus.agent.checkpoint import CheckpointUnavailableError, RunFencedError, RunState
from hivebus.agent.errors import AgentError
from hivebus.agent.limits import LimitHit, check_limits, soft_hits
from hivebus.agent.modelcall import (
    BudgetRefusedError,
    ModelCaller,
    ModelStep,
    WallClockExceededError,
    cost_of,
)
from hivebus.agent.models.base import (
    CHARS_PER_TOKEN_BOUND,
    Message,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolOutcome,
    ToolSpec,
    request_chars,
)
from hivebus.agent.reporting import RunEvents, StepReporter
from hivebus.agent.tool import ToolContext
from hivebus.agent.toolstep import ToolRunner, ToolStep, call_signature
from hivebus.agent.validators import OutputValidator, ValidationContext, run_validators
from hivebus.contracts import (
    SubTaskAssigned,
    SubTaskStatus,
    ToolErrorKind,
    ToolResult,
    Usage,
)
from hivebus.core import Clock, get_logger

log = get_logger(__name__)

DEFAULT_MAX_OUTPUT = 4096
"""Output tokens asked for per model call, lowered when the run has fewer tokens left."""

MIN_OUTPUT_TOKENS = 16
"""Below this much room for output, a model call is not worth making."""

LOOP_WARN_AT = 2
LOOP_END_AT = 3


class TokenLimitAheadError(Exception):
    """The next model call could take the run past its token limit."""

    def __init__(self, needed: int) -> None:
        """Remember how many tokens the call could need."""
        super().__init__(needed)
        self.needed = needed


def new_run_id() -> str:
    """A short unique id for one run."""
    return uuid.uuid4().hex[:12]


@dataclass
class RunOutcome:
    """How a run ended: status, reason, output (final or partial), usage, validator flags."""

    status: SubTaskStatus
    reason: str
    output: Any
    usage: Usage
    limit: str | None = None
    flags: list[str] = field(default_factory=list)


@dataclass
class RunContext:
    """What the loop needs besides the assignment."""

    system: str
    caller: ModelCaller
    tools: ToolRunner
    workspace: Path
    clock: Clock
    events: RunEvents
    run_id: str = field(default_factory=new_run_id)
    validators: list[OutputValidator] = field(default_factory=list)
    output_retries: int = 2
    tool_options: dict[str, Any] = field(default_factory=dict)
    tool_clients: dict[str, Any] = field(default_factory=dict)
    checkpoint: Callable[[RunState], Awaitable[None]] | None = None
    """Called with the run's state after every step (may raise `RunFencedError`)."""
    cancelled: Callable[[], Awaitable[bool]] | None = None
    """Asked at every step boundary: True stops the run `cancelled`."""


class AgentLoop:
    """One run of one sub-task, bounded by its limits and the task budget."""

    def __init__(
        self, assignment: SubTaskAssigned, ctx: RunContext, resume: RunState | None = None
    ) -> None:
        """Prepare a run, or continue one from its checkpoint; nothing happens until `run()`."""
        self.assignment = assignment
        self.ctx = ctx
        self.reporter = StepReporter(assignment, ctx.events)
        self.limits = assignment.limits
        self.usage = Usage()
        prompt = build_prompt(assignment)
        self.messages: list[Message] = [Message(role="user", text=prompt)]
        self.sources: list[str] = [prompt]
        self.last_text: str | None = None
        self.corrections = 0
        self.soft_warned: set[str] = set()
        self.last_call: str | None = None
        self.repeats = 0
        self.loop_warned = False
        self.pending: list[ToolCall] = []
        self.outcomes: list[ToolOutcome] = []
        self.pending_warning: str | None = None
        self._wall_before = 0.0
        if resume is not None:
            self._restore(resume)
        self._started = ctx.clock.monotonic()

    def _restore(self, state: RunState) -> None:
        self.ctx.run_id = state.run_id
        self.messages = list(state.messages)
        self.pending = list(state.pending_calls)
        self.outcomes = list(state.outcomes)
        self.pending_warning = state.pending_warning
        self.usage = state.usage.model_copy()
        self._wall_before = state.wall_s
        self.sources = list(state.sources)
        self.last_text = state.last_text
        self.corrections = state.corrections
        self.soft_warned = set(state.soft_warned)
        self.last_call = state.last_call
        self.repeats = state.repeats
        self.loop_warned = state.loop_warned

    def snapshot(self, owner: str = "") -> RunState:
        """The run's state now, as a checkpoint."""
        return RunState(
            run_id=self.ctx.run_id,
            owner=owner,
            messages=self.messages,
            pending_calls=self.pending,
            outcomes=self.outcomes,
            pending_warning=self.pending_warning,
            usage=self.usage,
            wall_s=round(self._wall(), 3),
            sources=self.sources,
            last_text=self.last_text,
            corrections=self.corrections,
            soft_warned=sorted(self.soft_warned),
            last_call=self.last_call,
            repeats=self.repeats,
            loop_warned=self.loop_warned,
        )

    async def _checkpoint(self) -> None:
        if self.ctx.checkpoint is not None:
            await self.ctx.checkpoint(self.snapshot())

    async def _cancelled(self) -> bool:
        return self.ctx.cancelled is not None and await self.ctx.cancelled()

    # -- bookkeeping ---------------------------------------------------------------------

    def _wall(self) -> float:
        return self._wall_before + self.ctx.clock.monotonic() - self._started

    def _time_left(self) -> float:
        return self.limits.max_wall_s - self._wall()

    def _finish(
        self, status: SubTaskStatus, reason: str, output: Any, limit: str | None = None
    ) -> RunOutcome:
        self.usage.wall_s = round(self._wall(), 3)
        return RunOutcome(
            status=status, reason=reason, output=output, usage=self.usage, limit=limit
        )

    def _over(self, hit: LimitHit) -> RunOutcome:
        return self._finish(SubTaskStatus.BUDGET_EXCEEDED, hit.reason(), self.last_text, hit.limit)

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> RunOutcome:
        """Loop until an answer, a limit or an error; never raises, always one outcome."""
        try:
            outcome = await self._loop()
        except (RunFencedError, CheckpointUnavailableError):
            raise  # not the run's outcome: the worker lost the run, or the bus is down
        except AgentError as exc:
            outcome = self._finish(SubTaskStatus.FAILED, str(exc), self.last_text)
        except Exception as exc:  # a bug in an adapter or a tool must still end the run
            log.exception("run_crashed")
            outcome = self._finish(
                SubTaskStatus.FAILED, f"internal error: {type(exc).__name__}: {exc}", self.last_text
            )
        return self._validated(outcome)

    def _validated(self, outcome: RunOutcome) -> RunOutcome:
        if outcome.output is None or not self.ctx.validators:
            return outcome
        result = run_validators(
            outcome.output, self.ctx.validators, ValidationContext(sources=tuple(self.sources))
        )
        outcome.output = result.output
        outcome.flags = list(result.flags)
        return outcome

    async def _loop(self) -> RunOutcome:
        while True:
            if await self._cancelled():
                return self._cancel()
            if self.pending or self.outcomes:  # resumed in the middle of a turn's tool calls
                outcome = await self._run_pending()
            else:
                outcome = await self._turn()
            if outcome is not None:
                return outcome

    def _cancel(self) -> RunOutcome:
        return self._finish(SubTaskStatus.CANCELLED, "the task was cancelled", self.last_text)

    async def _turn(self) -> RunOutcome | None:
        """One model step and what follows from it; an outcome when the run ends."""
        hit = check_limits(self.limits, self.usage, self._wall(), tool_call=False)
        if hit is not None:
            return self._over(hit)
        self._warn_near_limits()
        try:
            response = await self._model_step(with_tools=True)
        except WallClockExceededError:
            return self._over(
                LimitHit("max_wall_s", round(self._wall(), 3), self.limits.max_wall_s)
            )
        except BudgetRefusedError as exc:
            return self._finish(
                SubTaskStatus.BUDGET_EXCEEDED, str(exc), self.last_text, "task_budget"
            )
        except TokenLimitAheadError as exc:
            return self._finish(
                SubTaskStatus.BUDGET_EXCEEDED,
                f"max_tokens reached ({self.usage.tokens} of {self.limits.max_tokens}; "
                f"the next call could need {exc.needed})",
                self.last_text,
                "max_tokens",
            )
        if response.text:
            self.last_text = response.text
        if response.tool_calls:
            return await self._tool_calls(response)
        outcome = self._final_answer(response.text or "")
        if outcome is None:
            await self._checkpoint()  # a correction was asked for
        return outcome

    def _warn_near_limits(self) -> None:
        fresh = [
            h
            for h in soft_hits(self.limits, self.usage, self._wall())
            if h.limit not in self.soft_warned
        ]
        if not fresh:
            return
        self.soft_warned.update(h.limit for h in fresh)
        used = ", ".join(f"{h.limit} {h.used:g} of {h.bound:g}" for h in fresh)
        self._tell(
            f"You have used 80% or more of your limits ({used}). Wrap up now: stop exploring "
            "and give your final answer with what you have."
        )

    def _tell(self, text: str) -> None:
        """Add a runtime note to the conversation as a user turn."""
        self.messages.append(Message(role="user", text=f"[hivebus] {text}"))

    def _final_answer(self, text: str) -> RunOutcome | None:
        self.messages.append(Message(role="assistant", text=text))
        output, error = parse_output(text, self.assignment.output_schema)
        if error is None:
            return self._finish(SubTaskStatus.COMPLETED, "final answer given", output)
        if self.corrections < self.ctx.output_retries:
            self.corrections += 1
            self._tell(
                f"Your answer does not satisfy the output schema: {error}. Answer again with "
                f"JSON only (correction {self.corrections} of {self.ctx.output_retries})."
            )
            return None
        return self._finish(
            SubTaskStatus.FAILED,
            f"invalid_output: {error} (after {self.corrections} corrections)",
            text,
        )

    # -- steps ---------------------------------------------------------------------------

    async def _model_step(self, *, with_tools: bool) -> ModelResponse:
        specs = self.ctx.tools.toolbox.specs() if with_tools else []
        request = ModelRequest(
            system=self.ctx.system,
            messages=self.messages,
            tools=[
                ToolSpec(name=t.name, description=t.description, input_schema=t.input_schema())
                for t in specs
            ],
        )
        # Ask for no more output than the run has tokens left for, after the input's bound.
        room = self.limits.max_tokens - self.usage.tokens
        input_bound = request_chars(request) // CHARS_PER_TOKEN_BOUND + 1
        request.max_output_tokens = max(1, min(DEFAULT_MAX_OUTPUT, room - input_bound))
        bound = self.ctx.caller.models[0].usage_bound(request)
        needed = bound.input_tokens + bound.output_tokens
        if needed > room or room - input_bound < MIN_OUTPUT_TOKENS:
            raise TokenLimitAheadError(needed)
        step = ModelStep()
        response: ModelResponse | None = None
        error: str | None = None
        try:
            response = await self.ctx.caller.call(request, self._time_left, step)
        except WallClockExceededError:
            error = "the model call outlived the run's wall-clock limit"
            raise
        except AgentError as exc:
            error = str(exc)
            raise
        finally:
            self.usage.steps += 1
            self.usage.retries += len(step.retries)
            if response is not None:
                self.usage.input_tokens += response.usage.input_tokens
                self.usage.output_tokens += response.usage.output_tokens
                cost = cost_of(
                    self.ctx.caller.price_for(step.route),
                    response.usage.input_tokens,
                    response.usage.output_tokens,
                )
                self.usage.cost_usd = round(self.usage.cost_usd + cost, 6)
            await self.reporter.step(
                "model",
                run_id=self.ctx.run_id,
                number=self.usage.steps,
                name=step.route,
                step_input={"messages": len(self.messages), "tools": len(request.tools)},
                step_output=response.model_dump(mode="json") if response else None,
                error=error,
                response=response,
                retries=step,
            )
            await self.reporter.side_events(step.breaker_changes, step)
        if not with_tools and response.tool_calls:
            response = ModelResponse(text=response.text, usage=response.usage)
        return response

    async def _tool_calls(self, response: ModelResponse) -> RunOutcome | None:
        self.messages.append(
            Message(role="assistant", text=response.text, tool_calls=response.tool_calls)
        )
        self.pending = list(response.tool_calls)
        self.outcomes = []
        self.pending_warning = None
        await self._checkpoint()  # the model step is done: a resume starts with the tools
        return await self._run_pending()

    async def _run_pending(self) -> RunOutcome | None:
        """Run the current turn's remaining tool calls, checkpointing after each."""
        while self.pending:
            call = self.pending[0]
            if await self._cancelled():
                return self._finish(
                    SubTaskStatus.CANCELLED, "the task was cancelled", self.last_text
                )
            hit = check_limits(self.limits, self.usage, self._wall(), tool_call=True)
            if hit is not None:
                self._close_tool_turn()
                if hit.limit == "max_tool_calls":
                    return await self._last_turn(hit)
                return self._over(hit)
            signature = call_signature(call.name, call.args)
            self.repeats = self.repeats + 1 if signature == self.last_call else 1
            self.last_call = signature
            if self.repeats >= LOOP_END_AT:
                return self._finish(
                    SubTaskStatus.LOOP_DETECTED,
                    f"{call.name} called {self.repeats} times in a row with the same arguments",
                    self.last_text,
                )
            result = await self._tool_step(call.name, call.args, call.id)
            self.outcomes.append(ToolOutcome(call_id=call.id, name=call.name, result=result))
            self.pending.pop(0)
            if self.repeats == LOOP_WARN_AT and not self.loop_warned:
                self.loop_warned = True
                self.pending_warning = (
                    f"You called {call.name} twice in a row with the same arguments; the result "
                    "will not change. Do something different or give your final answer; a third "
                    "identical call ends the run."
                )
            if self.pending:
                await self._checkpoint()
        self.messages.append(Message(role="tool", tool_results=self.outcomes))
        self.outcomes = []
        if self.pending_warning:
            self._tell(self.pending_warning)
            self.pending_warning = None
        await self._checkpoint()
        return None

    def _close_tool_turn(self) -> None:
        """Answer every requested call (the API requires it), marking the ones not run."""
        not_run = ToolResult.failure(
            ToolErrorKind.DENIED, "not run: a limit was reached", "give your final answer"
        )
        self.outcomes.extend(
            ToolOutcome(call_id=call.id, name=call.name, result=not_run) for call in self.pending
        )
        self.pending = []
        self.messages.append(Message(role="tool", tool_results=self.outcomes))
        self.outcomes = []

    async def _last_turn(self, hit: LimitHit) -> RunOutcome:
        """At a limit with budget left: one last model turn without tools, then stop."""
        left = check_limits(self.limits, self.usage, self._wall(), tool_call=False)
        if left is None:
            self._tell(
                f"{hit.reason()}: no more tool calls. "
                "Give your final answer now with what you have."
            )
            try:
                response = await self._model_step(with_tools=False)
                if response.text:
                    self.last_text = response.text
            except (AgentError, WallClockExceededError, TokenLimitAheadError) as exc:
                log.info("last_turn_failed", error=repr(exc))
        return self._over(hit)

    async def _tool_step(self, name: str, args: Any, call_id: str) -> Any:
        self.usage.steps += 1
        self.usage.tool_calls += 1
        step_no = self.usage.steps
        context = ToolContext(
            workspace=self.ctx.workspace,
            task_id=self.assignment.task_id,
            subtask_id=self.assignment.subtask_id,
            run_id=self.ctx.run_id,
            step=step_no,
            idempotency_key=f"{self.ctx.run_id}:{step_no}:{call_id}",
            options=self.ctx.tool_options,
            clients=self.ctx.tool_clients,
            role=self.assignment.role,
        )
        step: ToolStep = await self.ctx.tools.call(name, args, context, self._time_left)
        self.usage.retries += len(step.retries)
        result = step.result
        self.sources.append(json.dumps(result.data, default=str) if result.ok else "")
        error = None if result.ok or result.error is None else result.error.message
        await self.reporter.step(
            "tool",
            run_id=self.ctx.run_id,
            number=self.usage.steps,
            name=name,
            step_input=args,
            step_output=result.model_dump(mode="json"),
            error=error,
            response=None,
            retries=step,
        )
        await self.reporter.side_events(step.breaker_changes, None)
        return result
