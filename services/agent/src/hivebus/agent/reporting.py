"""What a run reports while it works: one `StepRecorded` per step, and how a step is counted.

Step records have secrets scrubbed; a report that cannot be delivered is logged and never
ends the run. The same holds for an approval refused at resume (`ApprovalRefused`): the step
it refused is recorded too, so what happened stays visible in the run's steps. (Breaker
changes and the budget warning are published where they happen: by the breaker registry's
listener and by the model caller.)
"""

from __future__ import annotations

from typing import Any, Literal

from hivebus.agent.validators.secrets import redact_secrets
from hivebus.contracts import ApprovalRefused, RetryRecord, StepRecorded, SubTaskAssigned, Usage
from hivebus.core import EventSink, get_logger

log = get_logger(__name__)


def count_step(
    usage: Usage,
    *,
    tool_call: bool = False,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cost_usd: float = 0.0,
    retries: int = 0,
) -> Usage:
    """Add one step to a run's `usage`; return the step's own usage, for its record."""
    own = Usage()
    for counted in (usage, own):
        counted.add_step(
            tool_call=tool_call,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost_usd,
            retries=retries,
        )
    return own


class StepReporter:
    """Publishes the steps of one run."""

    def __init__(self, assignment: SubTaskAssigned, events: EventSink, run_id: str) -> None:
        """Report the run `run_id` of `assignment` through `events`."""
        self.assignment = assignment
        self.events = events
        self.run_id = run_id

    async def step(
        self,
        kind: Literal["model", "tool"],
        *,
        number: int,
        name: str,
        step_input: Any,
        step_output: Any,
        error: str | None,
        usage: Usage,
        retries: list[RetryRecord],
        notes: list[str] | None = None,
        duration_s: float | None = None,
        tier: str | None = None,
    ) -> None:
        """Publish one `StepRecorded`, secrets redacted from everything it carries."""
        event = StepRecorded(
            task_id=self.assignment.task_id,
            subtask_id=self.assignment.subtask_id,
            attempt=self.assignment.attempt,
            run_id=self.run_id,
            step=number,
            step_kind=kind,
            name=name,
            input=redact_secrets(step_input),
            output=redact_secrets(step_output),
            error=redact_secrets(error),
            usage=usage,
            retries=[r.model_copy(update={"error": redact_secrets(r.error)}) for r in retries],
            notes=[redact_secrets(note) for note in notes or []],
            duration_s=round(duration_s, 4) if duration_s is not None else None,
            tier=tier,
        )
        try:
            await self.events.publish(event)
        except Exception as exc:  # noqa: BLE001 - a lost step event must not kill the run
            log.warning("step_event_lost", step=event.step, error=repr(exc))


async def report_refusal(events: EventSink, refusal: ApprovalRefused) -> None:
    """Publish an approval refused at resume; a refusal that cannot be published is logged."""
    log.warning("approval_refused", approval_id=refusal.approval_id, code=refusal.code.value)
    try:
        await events.publish(refusal)
    except Exception as exc:  # noqa: BLE001 - a lost report must not kill the run
        log.warning("approval_refusal_lost", approval_id=refusal.approval_id, error=repr(exc))
