"""What happens inside a call, as events on the current span (the call's) and as counts.

    a retry            `gen_ai.retry` (attempt, error, delay_s, target)  hivebus.retries
    a breaker change   `breaker_changed` (breaker, old, new)             hivebus.breaker.opens
                                                                         (when it opens)
    a budget warning   `budget_warning` (used and max tokens and cost)

Each does nothing when telemetry is off.
"""

from __future__ import annotations

from typing import Literal

from opentelemetry import trace

from hivebus.agent.tracing.labels import run_labels
from hivebus.core import telemetry
from hivebus.core.budget import LedgerState
from hivebus.core.reliability import BreakerState, RetryAttempt


def retried(target: Literal["model", "tool"], name: str, attempt: RetryAttempt) -> None:
    """A call of model route or tool `name` failed and is tried again after `attempt.delay_s`."""
    found = telemetry.current()
    if not found.enabled:
        return
    trace.get_current_span().add_event(
        "gen_ai.retry",
        {
            "attempt": attempt.attempt,
            "error": attempt.error,
            "delay_s": attempt.delay_s,
            "hivebus.retry.target": target,
            "hivebus.retry.name": name,
        },
    )
    found.metrics.retries.add(1, {"hivebus.retry.target": target, **run_labels()})


def breaker_changed(name: str, old: str, new: str) -> None:
    """Breaker `name` (`model:<route>`, `tool:<name>`) went from `old` to `new`."""
    found = telemetry.current()
    if not found.enabled:
        return
    trace.get_current_span().add_event(
        "breaker_changed", {"hivebus.breaker": name, "old": old, "new": new}
    )
    if new == BreakerState.OPEN.value:
        found.metrics.breaker_opens.add(1, {"hivebus.breaker": name, **run_labels()})


def budget_warning(state: LedgerState) -> None:
    """The task crossed its budget's warning threshold with the current call."""
    if not telemetry.current().enabled:
        return
    trace.get_current_span().add_event(
        "budget_warning",
        {
            "hivebus.budget.used_tokens": state.used_tokens,
            "hivebus.budget.max_tokens": state.max_tokens,
            "hivebus.budget.used_cost_usd": state.used_cost_usd,
            "hivebus.budget.max_cost_usd": state.max_cost_usd,
        },
    )
