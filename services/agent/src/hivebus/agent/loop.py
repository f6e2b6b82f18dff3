"""The bounded agent loop: model call, tool calls, repeat; always ends with a terminal status.

check limits -> call the model -> run its tool calls -> check limits -> ...
final text (valid against the output schema, if any) -> completed
a limit reached -> budget_exceeded, with the limit named and the partial output kept
a model that cannot answer -> failed, with the error
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jsonschema

from hivebus.agent.errors import AgentError, ModelError
from hivebus.agent.limits import LimitHit, check_limits
from hivebus.agent.models.base import (
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    ToolOutcome,
    ToolSpec,
)
from hivebus.agent.tool import ToolContext
from hivebus.agent.toolbox import Toolbox
from hivebus.contracts import StepRecorded, SubTaskAssigned, SubTaskStatus, Usage
from hivebus.core import Clock, Price, get_logger

log = get_logger(__name__)


class StepSink(Protocol):
    """Where the loop reports each step (the agent service publishes them as events)."""

    async def step(self, event: StepRecorded) -> None:
        """Record one step."""
        ...


def new_run_id() -> str:
    """A short unique id for one run."""
    return uuid.uuid4().hex[:12]


class WallClockExceeded(Exception):  # noqa: N818 - a signal inside the loop, never escapes it
    """The run's wall-clock limit expired during a model call."""


@dataclass
class RunOutcome:
    """How a run ended: status, reason, output (final or partial) and usage."""

    status: SubTaskStatus
    reason: str
    output: Any
    usage: Usage


@dataclass
class RunContext:
    """What the loop needs besides the assignment."""

    system: str
    model: Model
    toolbox: Toolbox
    price: Price
    workspace: Path
    clock: Clock
    sink: StepSink
    run_id: str = field(default_factory=new_run_id)


def build_prompt(assignment: SubTaskAssigned) -> str:
    """The first user turn: the sub-task's prompt, the task goal, inputs and dependency outputs."""
    parts = [assignment.prompt, f"\nOverall goal of the task: {assignment.goal}"]
    if assignment.input:
        parts.append(f"\nInput:\n{json.dumps(assignment.input, indent=2, default=str)}")
    parts.extend(
        f"\nOutput of sub-task {dep.subtask_id!r}:\n{json.dumps(dep.output, indent=2, default=str)}"
        for dep in assignment.dependencies
    )
    if assignment.output_schema is not None:
        parts.append(
            "\nAnswer with JSON only, valid against this JSON Schema:\n"
            + json.dumps(assignment.output_schema)
        )
    return "\n".join(parts)


def parse_output(text: str, schema: dict[str, Any] | None) -> tuple[Any, str | None]:
    """The final output: plain text, or JSON valid against `schema`. Returns (output, error)."""
    if schema is None:
        return text, None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return text, f"the answer is not JSON: {exc.msg} at position {exc.pos}"
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        return text, f"the answer does not match the output schema: {exc.message}"
    except jsonschema.SchemaError as exc:
        return text, f"the sub-task's output schema is invalid: {exc.message}"
    return value, None


class AgentLoop:
    """One run of one sub-task, bounded by its limits."""

    def __init__(self, assignment: SubTaskAssigned, ctx: RunContext) -> None:
        """Prepare a run; nothing happens until `run()`."""
        self.assignment = assignment
        self.ctx = ctx
        self.limits = assignment.limits
        self.usage = Usage()
        self.messages: list[Message] = [Message(role="user", text=build_prompt(assignment))]
        self.last_text: str | None = None
        self._started = ctx.clock.monotonic()

    def _wall(self) -> float:
        return self.ctx.clock.monotonic() - self._started

    def _finish(self, status: SubTaskStatus, reason: str, output: Any) -> RunOutcome:
        self.usage.wall_s = round(self._wall(), 3)
        return RunOutcome(status=status, reason=reason, output=output, usage=self.usage)

    def _over(self, hit: LimitHit) -> RunOutcome:
        return self._finish(SubTaskStatus.BUDGET_EXCEEDED, hit.reason(), self.last_text)

    async def run(self) -> RunOutcome:
        """Loop until a final answer, a limit or an error; never raises for model/tool faults."""
        try:
            return await self._loop()
        except AgentError as exc:
            return self._finish(SubTaskStatus.FAILED, str(exc), self.last_text)
        except Exception as exc:  # a bug in an adapter or a tool must still end the run
            log.exception("run_crashed")
            return self._finish(
                SubTaskStatus.FAILED,
                f"internal error: {type(exc).__name__}: {exc}",
                self.last_text,
            )

    async def _loop(self) -> RunOutcome:
        while True:
            hit = check_limits(self.limits, self.usage, self._wall(), tool_call=False)
            if hit is not None:
                return self._over(hit)
            try:
                response = await self._call_model()
            except WallClockExceeded:
                return self._over(
                    LimitHit("max_wall_s", round(self._wall(), 3), self.limits.max_wall_s)
                )
            if response.tool_calls:
                self.messages.append(
                    Message(role="assistant", text=response.text, tool_calls=response.tool_calls)
                )
                if response.text:
                    self.last_text = response.text
                outcome = await self._run_tools(response)
                if outcome is not None:
                    return outcome
                continue
            text = response.text or ""
            self.messages.append(Message(role="assistant", text=text))
            self.last_text = text
            output, error = parse_output(text, self.assignment.output_schema)
            if error is not None:
                return self._finish(SubTaskStatus.FAILED, f"invalid_output: {error}", text)
            return self._finish(SubTaskStatus.COMPLETED, "final answer given", output)

    async def _call_model(self) -> ModelResponse:
        request = ModelRequest(
            system=self.ctx.system,
            messages=self.messages,
            tools=[
                ToolSpec(name=t.name, description=t.description, input_schema=t.input_schema())
                for t in self.ctx.toolbox.specs()
            ],
        )
        remaining = self.limits.max_wall_s - self._wall()
        error: str | None = None
        response: ModelResponse | None = None
        deadline = asyncio.timeout(max(remaining, 0.001))
        try:
            async with deadline:
                response = await self.ctx.model.complete(request)
        except ModelError as exc:
            error = str(exc)
            raise
        except TimeoutError as exc:
            if not deadline.expired():  # the adapter's own timeout, not our wall clock
                error = f"model call timed out: {exc or 'TimeoutError'}"
                raise ModelError(error, retryable=True) from exc
            error = "the model call outlived the run's wall-clock limit"
            raise WallClockExceeded from exc
        finally:
            self.usage.steps += 1
            if response is not None:
                self._add_tokens(response)
            await self._record(
                "model",
                name=self.ctx.model.route,
                step_input={"messages": len(self.messages)},
                step_output=response.model_dump(mode="json") if response else None,
                error=error,
                response=response,
            )
        return response

    def _add_tokens(self, response: ModelResponse) -> None:
        price = self.ctx.price
        self.usage.input_tokens += response.usage.input_tokens
        self.usage.output_tokens += response.usage.output_tokens
        cost = (
            response.usage.input_tokens * price.input_per_mtok
            + response.usage.output_tokens * price.output_per_mtok
        ) / 1_000_000
        self.usage.cost_usd = round(self.usage.cost_usd + cost, 6)

    async def _run_tools(self, response: ModelResponse) -> RunOutcome | None:
        outcomes: list[ToolOutcome] = []
        for call in response.tool_calls:
            hit = check_limits(self.limits, self.usage, self._wall(), tool_call=True)
            if hit is not None:
                return self._over(hit)
            self.usage.steps += 1
            self.usage.tool_calls += 1
            step = self.usage.steps
            context = ToolContext(
                workspace=self.ctx.workspace,
                task_id=self.assignment.task_id,
                subtask_id=self.assignment.subtask_id,
                run_id=self.ctx.run_id,
                step=step,
                idempotency_key=f"{self.ctx.run_id}:{step}:{call.id}",
            )
            remaining = max(self.limits.max_wall_s - self._wall(), 0.001)
            result = await self.ctx.toolbox.call(call.name, call.args, context, remaining)
            outcomes.append(ToolOutcome(call_id=call.id, name=call.name, result=result))
            error = None if result.ok or result.error is None else result.error.message
            await self._record(
                "tool",
                name=call.name,
                step_input=call.args,
                step_output=result.model_dump(mode="json"),
                error=error,
                response=None,
            )
        self.messages.append(Message(role="tool", tool_results=outcomes))
        return None

    async def _record(
        self,
        kind: str,
        *,
        name: str,
        step_input: Any,
        step_output: Any,
        error: str | None,
        response: ModelResponse | None,
    ) -> None:
        usage = Usage(steps=1, tool_calls=1 if kind == "tool" else 0)
        if response is not None:
            usage.input_tokens = response.usage.input_tokens
            usage.output_tokens = response.usage.output_tokens
        event = StepRecorded(
            task_id=self.assignment.task_id,
            subtask_id=self.assignment.subtask_id,
            attempt=self.assignment.attempt,
            run_id=self.ctx.run_id,
            step=self.usage.steps,
            step_kind="model" if kind == "model" else "tool",
            name=name,
            input=step_input,
            output=step_output,
            error=error,
            usage=usage,
        )
        try:
            await self.ctx.sink.step(event)
        except Exception as exc:  # noqa: BLE001 - a lost step event must not kill the run
            log.warning("step_event_lost", step=event.step, error=repr(exc))
