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
    a person declined a model call's spend          -> budget_exceeded
    resumed, and the task budget cannot cover going on
                                                    -> budget_exceeded, every approval of the
                                                       pause refused (`budget`)
Output validators run on whatever output leaves the run. A step that needs a person does not
end the run: it pauses it (`RunPaused`, raised to the service, which publishes the requests).

The loop works on one `RunCheckpoint` (`self.state`), moving its phase: `model` before a model
turn, `tools` while that turn's tool calls run (`toolturn.py`), `awaiting_approval` while it
waits for people (`approvals.py`), `finished` once the service decided the terminal event
(`decide`). It is saved after every step. About 370 lines, so that every way a run can end
(or pause) reads in one file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from hivebus.agent.answers import RUNTIME_PREFIX, parse_output, runtime_note
from hivebus.agent.approvals import RunPaused, unresolved, waiting
from hivebus.agent.checkpoint import CheckpointUnavailableError, RunFencedError
from hivebus.agent.errors import AgentError
from hivebus.agent.limits import LimitHit, check_limits, wrap_up
from hivebus.agent.modelcall import (
    BudgetRefusedError,
    ModelStep,
    TokenLimitAheadError,
    WallClockExceededError,
    bounded_request,
)
from hivebus.agent.models.base import ModelRequest, ModelResponse, TurnUsage
from hivebus.agent.reporting import StepReporter, count_step, report_refusal
from hivebus.agent.resume import Refusal, refused
from hivebus.agent.runcontext import RunContext, new_run, new_run_id
from hivebus.agent.spend import SpendGate
from hivebus.agent.toolturn import ToolTurn
from hivebus.agent.validators import ValidationContext, run_validators
from hivebus.contracts import (
    Message,
    RefusalCode,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStatus,
    Usage,
)
from hivebus.contracts.runs import RunCheckpoint, RunPhase
from hivebus.core import get_logger

# `parse_output` is re-exported: tests and callers know it from here.
__all__ = [
    "AgentLoop",
    "RunContext",
    "RunOutcome",
    "RunPaused",
    "new_run",
    "new_run_id",
    "parse_output",
]

log = get_logger(__name__)


@dataclass
class RunOutcome:
    """How a run ended: status, reason, output (final or partial), usage, validator flags."""

    status: SubTaskStatus
    reason: str
    output: Any
    usage: Usage
    limit: str | None = None
    flags: list[str] = field(default_factory=list)


class AgentLoop:
    """One run of one sub-task, bounded by its limits and the task budget."""

    def __init__(self, assignment: SubTaskAssigned, ctx: RunContext, state: RunCheckpoint) -> None:
        """Run (or continue) the run `state` holds; nothing happens until `run()`."""
        self.assignment = assignment
        self.ctx = ctx
        self.state = state
        self.limits = assignment.limits
        self.reporter = StepReporter(assignment, ctx.events, state.run_id)
        self.spend = SpendGate(assignment, ctx, state, self._save)
        self._wall_before = state.wall_s  # time used before this worker took the run
        self._started = ctx.clock.monotonic()

    # -- bookkeeping ---------------------------------------------------------------------

    def _wall(self) -> float:
        return self._wall_before + self.ctx.clock.monotonic() - self._started

    def _time_left(self) -> float:
        return self.limits.max_wall_s - self._wall()

    async def _save(self) -> None:
        self.state.wall_s = round(self._wall(), 3)
        if self.ctx.checkpoint is not None:
            await self.ctx.checkpoint(self.state)

    async def _cancelled(self) -> bool:
        return self.ctx.cancelled is not None and await self.ctx.cancelled()

    async def decide(self, finished: SubTaskFinished) -> None:
        """Record the terminal event in the checkpoint (phase `finished`) before it is published."""
        self.state.phase = RunPhase.FINISHED
        self.state.finished = finished
        await self._save()

    def _finish(
        self, status: SubTaskStatus, reason: str, output: Any, limit: str | None = None
    ) -> RunOutcome:
        self.state.usage.wall_s = round(self._wall(), 3)
        return RunOutcome(
            status=status, reason=reason, output=output, usage=self.state.usage, limit=limit
        )

    def _over(self, hit: LimitHit) -> RunOutcome:
        return self._finish(
            SubTaskStatus.BUDGET_EXCEEDED, hit.reason(), self.state.last_text, hit.limit
        )

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> RunOutcome:
        """Loop until an answer, a limit or an error: always one outcome, unless it pauses.

        Raises:
            RunPaused: a step waits for people; the pause is checkpointed.
        """
        try:
            outcome = await self._loop()
        except (RunFencedError, CheckpointUnavailableError, RunPaused):
            raise  # not the run's outcome: it lost the run, the bus is down, or it waits
        except AgentError as exc:
            outcome = self._finish(SubTaskStatus.FAILED, str(exc), self.state.last_text)
        except Exception as exc:  # a bug in an adapter or a tool must still end the run
            log.exception("run_crashed")
            outcome = self._finish(
                SubTaskStatus.FAILED,
                f"internal error: {type(exc).__name__}: {exc}",
                self.state.last_text,
            )
        return self._validated(outcome)

    def _validated(self, outcome: RunOutcome) -> RunOutcome:
        if outcome.output is None or not self.ctx.validators:
            return outcome
        result = run_validators(
            outcome.output,
            self.ctx.validators,
            ValidationContext(sources=tuple(self.state.sources)),
        )
        outcome.output = result.output
        outcome.flags = list(result.flags)
        return outcome

    async def _loop(self) -> RunOutcome:
        while True:
            if await self._cancelled():
                return self._finish(
                    SubTaskStatus.CANCELLED, "the task was cancelled", self.state.last_text
                )
            if self.state.phase is RunPhase.AWAITING_APPROVAL:  # resumed with decisions
                outcome = await self._resume()
            elif self.state.phase is RunPhase.TOOLS:  # resumed in the middle of a turn's calls
                outcome = await self._tool_turn()
            else:
                outcome = await self._model_turn()
            if outcome is not None:
                return outcome

    async def _model_turn(self) -> RunOutcome | None:
        """One model step and what follows from it; an outcome when the run ends."""
        self.state.phase = RunPhase.MODEL
        hit = check_limits(self.limits, self.state.usage, self._wall(), tool_call=False)
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
                SubTaskStatus.BUDGET_EXCEEDED, str(exc), self.state.last_text, "task_budget"
            )
        except TokenLimitAheadError as exc:
            return self._finish(
                SubTaskStatus.BUDGET_EXCEEDED,
                f"max_tokens reached ({self.state.usage.tokens} of {self.limits.max_tokens}; "
                f"the next call could need {exc.needed})",
                self.state.last_text,
                "max_tokens",
            )
        if response.text:
            self.state.last_text = response.text
        if response.tool_calls:
            self.state.messages.append(
                Message(role="assistant", text=response.text, tool_calls=response.tool_calls)
            )
            self.state.pending_calls = list(response.tool_calls)
            self.state.turn_step = self.state.usage.steps
            self.state.outcomes = []
            self.state.pending_warning = None
            self.state.phase = RunPhase.TOOLS
            await self._save()  # the model step is done: a resume starts with the tools
            return await self._tool_turn()
        outcome = self._final_answer(response.text or "")
        if outcome is None:
            await self._save()  # a correction was asked for
        return outcome

    def _turn(self) -> ToolTurn:
        return ToolTurn(
            self.assignment, self.ctx, self.state, self.reporter, wall=self._wall, save=self._save
        )

    async def _tool_turn(self) -> RunOutcome | None:
        stop = await self._turn().run()
        if stop is None:
            return None
        if stop.hit is None:
            return self._finish(stop.status, stop.reason, self.state.last_text)
        if stop.hit.limit == "max_tool_calls":
            return await self._last_turn(stop.hit)
        return self._over(stop.hit)

    async def _resume(self) -> RunOutcome | None:
        """Go on after a pause once every approval of it is resolved, if the budget can cover it.

        Raises:
            RunPaused: an approval of the pause has no resolution yet.
        """
        still = unresolved(self.state)
        if still:
            raise RunPaused(still)
        try:
            why = await self.spend.uncovered(self._request(with_tools=True))
        except TokenLimitAheadError:
            why = None  # the run's own token limit ends it at its next model step
        if why is not None:
            for approval in waiting(self.state):
                approval.applied = True
                await report_refusal(
                    self.ctx.events, refused(approval, Refusal(RefusalCode.BUDGET, why))
                )
            if self.state.pending_calls:
                self._turn().close_not_run(f"not run: {why}")
            return self._finish(
                SubTaskStatus.BUDGET_EXCEEDED, why, self.state.last_text, "task_budget"
            )
        self.state.phase = RunPhase.TOOLS if self.state.pending_calls else RunPhase.MODEL
        await self._save()
        return None

    def _told(self) -> list[str]:
        """The runtime's notes this call brings the model, for the step's record.

        Limit and loop warnings and output corrections: those after the model's latest answer.
        """
        told: list[str] = []
        for message in reversed(self.state.messages):
            if message.role == "assistant":
                break
            text = message.text or ""
            if message.role == "user" and text.startswith(RUNTIME_PREFIX):
                told.append("told the model: " + text.removeprefix(RUNTIME_PREFIX).strip())
        return told[::-1]

    def _warn_near_limits(self) -> None:
        fresh, note = wrap_up(self.limits, self.state.usage, self._wall(), self.state.soft_warned)
        if fresh:
            self.state.soft_warned.extend(fresh)
            self.state.messages.append(runtime_note(note))

    def _final_answer(self, text: str) -> RunOutcome | None:
        self.state.messages.append(Message(role="assistant", text=text))
        output, error = parse_output(text, self.assignment.output_schema)
        if error is None:
            return self._finish(SubTaskStatus.COMPLETED, "final answer given", output)
        if self.state.corrections < self.ctx.output_retries:
            self.state.corrections += 1
            self.state.messages.append(
                runtime_note(
                    f"Your answer does not satisfy the output schema: {error}. Answer again "
                    f"with JSON only (correction {self.state.corrections} of "
                    f"{self.ctx.output_retries})."
                )
            )
            return None
        return self._finish(
            SubTaskStatus.FAILED,
            f"invalid_output: {error} (after {self.state.corrections} corrections)",
            text,
        )

    async def _last_turn(self, hit: LimitHit) -> RunOutcome:
        """At a limit with budget left: one last model turn without tools, then stop."""
        left = check_limits(self.limits, self.state.usage, self._wall(), tool_call=False)
        if left is None:
            self.state.messages.append(
                runtime_note(
                    f"{hit.reason()}: no more tool calls. "
                    "Give your final answer now with what you have."
                )
            )
            try:
                response = await self._model_step(with_tools=False)
                if response.text:
                    self.state.last_text = response.text
            except (AgentError, WallClockExceededError, TokenLimitAheadError) as exc:
                log.info("last_turn_failed", error=repr(exc))
        return self._over(hit)

    # -- the model step ------------------------------------------------------------------

    def _request(self, *, with_tools: bool) -> ModelRequest:
        return bounded_request(
            self.ctx.system,
            self.state.messages,
            self.ctx.tools.toolbox.specs() if with_tools else [],
            room=self.limits.max_tokens - self.state.usage.tokens,
            model=self.ctx.caller.models[0],
            output_schema=self.assignment.output_schema,
        )

    async def _model_step(self, *, with_tools: bool) -> ModelResponse:
        request = self._request(with_tools=with_tools)
        if with_tools:  # the last turn, at a limit, is not worth a person's time
            await self.spend.check(request)
        step = ModelStep()
        told = self._told()
        response: ModelResponse | None = None
        error: str | None = None
        began = time.monotonic()
        try:
            response = await self.ctx.caller.call(request, self._time_left, step)
        except WallClockExceededError:
            error = "the model call outlived the run's wall-clock limit"
            raise
        except AgentError as exc:
            error = str(exc)
            raise
        finally:
            used = response.usage if response is not None else TurnUsage()
            own = count_step(
                self.state.usage,
                input_tokens=used.input_tokens,
                output_tokens=used.output_tokens,
                cost_usd=step.cost_usd,
                retries=len(step.retries),
            )
            await self.reporter.step(
                "model",
                number=self.state.usage.steps,
                name=step.route,
                step_input={"messages": len(self.state.messages), "tools": len(request.tools)},
                step_output=response.model_dump(mode="json") if response else None,
                error=error,
                usage=own,
                retries=step.retries,
                notes=[*told, *step.notes],
                duration_s=time.monotonic() - began,
            )
        self.state.model = step.route  # the model that gave the latest answer
        if not with_tools and response.tool_calls:
            response = ModelResponse(text=response.text, usage=response.usage)
        return response
