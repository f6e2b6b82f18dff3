"""What a run reports while it works: steps, breaker changes, budget warnings.

Step records have secrets scrubbed; a report that cannot be delivered is logged and never
ends the run.
"""

from __future__ import annotations

from typing import Any, Protocol

from hivebus.agent.modelcall import ModelStep
from hivebus.agent.models.base import ModelResponse
from hivebus.agent.toolstep import ToolStep
from hivebus.agent.validators.secrets import redact_secrets
from hivebus.contracts import (
    BreakerChanged,
    BudgetWarning,
    StepRecorded,
    SubTaskAssigned,
    Usage,
)
from hivebus.core import get_logger
from hivebus.core.reliability import BreakerState

log = get_logger(__name__)


class RunEvents(Protocol):
    """Where a run reports what it does (the agent service publishes these as events)."""

    async def step(self, event: StepRecorded) -> None:
        """One step."""
        ...

    async def budget_warning(self, event: BudgetWarning) -> None:
        """The task crossed 80% of its budget."""
        ...

    async def breaker_changed(self, event: BreakerChanged) -> None:
        """A breaker changed state."""
        ...


class StepReporter:
    """Turns what happened in a step into events for one run."""

    def __init__(self, assignment: SubTaskAssigned, events: RunEvents) -> None:
        """Report for `assignment` through `events`."""
        self.assignment = assignment
        self.events = events

    async def step(
        self,
        kind: str,
        *,
        run_id: str,
        number: int,
        name: str,
        step_input: Any,
        step_output: Any,
        error: str | None,
        response: ModelResponse | None,
        retries: ModelStep | ToolStep,
    ) -> None:
        """Publish one `StepRecorded`, secrets redacted from everything it carries."""
        usage = Usage(steps=1, tool_calls=1 if kind == "tool" else 0, retries=len(retries.retries))
        if response is not None:
            usage.input_tokens = response.usage.input_tokens
            usage.output_tokens = response.usage.output_tokens
        event = StepRecorded(
            task_id=self.assignment.task_id,
            subtask_id=self.assignment.subtask_id,
            attempt=self.assignment.attempt,
            run_id=run_id,
            step=number,
            step_kind="model" if kind == "model" else "tool",
            name=name,
            input=redact_secrets(step_input),
            output=redact_secrets(step_output),
            error=redact_secrets(error),
            usage=usage,
            retries=[
                r.model_copy(update={"error": redact_secrets(r.error)}) for r in retries.retries
            ],
            notes=[redact_secrets(note) for note in retries.notes],
        )
        try:
            await self.events.step(event)
        except Exception as exc:  # noqa: BLE001 - a lost step event must not kill the run
            log.warning("step_event_lost", step=event.step, error=repr(exc))

    async def side_events(
        self, changes: list[tuple[str, BreakerState, BreakerState]], step: ModelStep | None
    ) -> None:
        """Publish breaker changes and, once per task, the budget warning."""
        try:
            for name, old, new in changes:
                log.warning("breaker_changed", breaker=name, old=old.value, new=new.value)
                await self.events.breaker_changed(
                    BreakerChanged(
                        task_id=self.assignment.task_id,
                        subtask_id=self.assignment.subtask_id,
                        breaker=name,
                        old=old.value,
                        new=new.value,
                    )
                )
            if step is not None and step.budget_warning is not None:
                state = step.budget_warning
                await self.events.budget_warning(
                    BudgetWarning(
                        task_id=self.assignment.task_id,
                        used_tokens=state.used_tokens,
                        max_tokens=state.max_tokens,
                        used_cost_usd=state.used_cost_usd,
                        max_cost_usd=state.max_cost_usd,
                    )
                )
        except Exception as exc:  # noqa: BLE001 - a lost side event must not kill the run
            log.warning("side_event_lost", error=repr(exc))
