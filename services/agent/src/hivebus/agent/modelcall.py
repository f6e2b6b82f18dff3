"""One model step: the fallback chain, each model behind its breaker, retries, the task budget.

for each model of the chain (primary first):
    breaker open?            -> skip it (noted)
    reserve an upper bound   -> refused: the task budget is exhausted (run ends)
    call, retrying transient errors (backoff + jitter, bounded by attempts and time)
    success                  -> settle the reservation with actual usage, breaker closes
    failure                  -> settle with nothing used, breaker counts it, next model
every model failed or skipped -> ModelsExhausted
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from hivebus.agent.checkpoint import CheckpointUnavailableError
from hivebus.agent.errors import AgentError, ModelError
from hivebus.agent.models.base import Model, ModelRequest, ModelResponse
from hivebus.contracts import RetryRecord, TaskBudget
from hivebus.core import Price
from hivebus.core.budget import BudgetLedger, LedgerState, Reservation
from hivebus.core.reliability import BreakerRegistry, BreakerState, RetryPolicy, retry_transient
from hivebus.core.reliability.retry import RetryAttempt


class ModelsExhaustedError(AgentError):
    """No model of the chain could answer: each failed or had its breaker open."""


class BudgetRefusedError(AgentError):
    """The task budget cannot cover the next model call."""


class WallClockExceededError(Exception):
    """The run's wall-clock limit expired during a model call (a signal inside the loop)."""


BreakerChange = tuple[str, BreakerState, BreakerState]

RESERVE_WAIT_INITIAL_S = 0.05
RESERVE_WAIT_MAX_S = 1.0
RESERVE_WAIT_ATTEMPTS = 40
"""While other calls' reservations block the task budget, wait for them this long, at most."""


@dataclass
class ModelStep:
    """What happened while getting one answer: who answered, retries, fallbacks, breakers."""

    route: str = ""
    retries: list[RetryRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    breaker_changes: list[BreakerChange] = field(default_factory=list)
    budget_warning: LedgerState | None = None


@dataclass
class BudgetGate:
    """The task budget a caller reserves against."""

    ledger: BudgetLedger
    task_id: str
    budget: TaskBudget
    holder: str | None = None
    """Who reserves: one sub-task attempt, so a resumed run replaces its dead call's hold."""


def cost_of(price: Price, input_tokens: int, output_tokens: int) -> float:
    """USD for a call, from a price per million tokens."""
    return (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1e6


class ModelCaller:
    """Gets one answer from a role's model chain."""

    def __init__(
        self,
        models: list[Model],
        *,
        breakers: BreakerRegistry,
        retry: RetryPolicy,
        price_for: Callable[[str], Price],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        budget: BudgetGate | None = None,
    ) -> None:
        """Try `models` in order."""
        self.models = models
        self.breakers = breakers
        self.retry = retry
        self.price_for = price_for
        self.sleep = sleep
        self.budget = budget

    async def call(
        self, request: ModelRequest, time_left: Callable[[], float], step: ModelStep
    ) -> ModelResponse:
        """The first answer the chain gives, recording in `step` what happened on the way.

        Raises:
            ModelsExhaustedError: every model failed or was skipped.
            BudgetRefusedError: the task budget cannot cover the call.
            WallClockExceededError: the run's time ran out during a call.
        """
        for model in self.models:
            step.route = model.route
            breaker = self.breakers.get(f"model:{model.route}")
            before = breaker.state
            allowed = breaker.allow()
            trial = breaker.granted_trial
            self._note_change(step, breaker.name, before, breaker.state)
            if not allowed:
                wait = breaker.seconds_until_trial()
                step.notes.append(f"{model.route}: circuit open for {wait:.1f}s more, skipped")
                continue
            try:
                response = await self._try(model, request, time_left, step)
            except ModelError as exc:
                before = breaker.state
                if exc.retryable:
                    breaker.record_failure()
                else:
                    breaker.release(trial=trial)
                self._note_change(step, breaker.name, before, breaker.state)
                step.notes.append(f"{model.route} failed: {exc}")
                continue
            except BaseException:
                breaker.release(trial=trial)
                raise
            before = breaker.state
            breaker.record_success()
            self._note_change(step, breaker.name, before, breaker.state)
            return response
        tried = ", ".join(m.route for m in self.models)
        raise ModelsExhaustedError(
            f"no model could answer (tried {tried}): "
            + "; ".join(n for n in step.notes if not n.startswith("breaker "))
        )

    async def _try(
        self, model: Model, request: ModelRequest, time_left: Callable[[], float], step: ModelStep
    ) -> ModelResponse:
        price = self.price_for(model.route)
        reservation = None
        if self.budget is not None:
            bound = model.usage_bound(request)
            held_cost = cost_of(price, bound.input_tokens, bound.output_tokens)
            reservation = await self._reserve(
                bound.input_tokens + bound.output_tokens, held_cost, time_left
            )

        def record(attempt: RetryAttempt) -> None:
            step.retries.append(
                RetryRecord(
                    target=model.route,
                    attempt=attempt.attempt,
                    error=attempt.error,
                    delay_s=attempt.delay_s,
                )
            )

        async def once() -> ModelResponse:
            deadline = asyncio.timeout(max(time_left(), 0.001))
            try:
                async with deadline:
                    return await model.complete(request)
            except TimeoutError as exc:
                if deadline.expired():
                    raise WallClockExceededError from exc
                raise ModelError(f"{model.route}: timed out: {exc}", retryable=True) from exc

        used_tokens, used_cost = 0, 0.0
        try:
            response = await retry_transient(
                once, self.retry, sleep=self.sleep, time_left=time_left, on_retry=record
            )
            used_tokens = response.usage.input_tokens + response.usage.output_tokens
            used_cost = cost_of(price, response.usage.input_tokens, response.usage.output_tokens)
        except WallClockExceededError:
            if reservation is not None:  # the call may have used anything up to its bound
                used_tokens, used_cost = reservation.tokens, reservation.cost_usd
            raise
        finally:
            if reservation is not None and self.budget is not None:
                try:
                    crossed = await self.budget.ledger.settle(reservation, used_tokens, used_cost)
                except Exception as exc:  # the bus, not the run: retry the delivery later
                    raise CheckpointUnavailableError(
                        f"task budget ledger unreachable: {exc!r}"
                    ) from exc
                step.budget_warning = step.budget_warning or crossed
        return response

    async def _reserve(
        self, tokens: int, cost_usd: float, time_left: Callable[[], float]
    ) -> Reservation:
        """Reserve against the task budget, waiting (bounded) while only in-flight calls block."""
        assert self.budget is not None  # noqa: S101 - only called with a budget
        delay = RESERVE_WAIT_INITIAL_S
        for _ in range(RESERVE_WAIT_ATTEMPTS):
            try:
                reservation, why, may_wait = await self.budget.ledger.reserve(
                    self.budget.task_id, self.budget.budget, tokens, cost_usd, self.budget.holder
                )
            except Exception as exc:  # the bus, not the run: retry the delivery later
                raise CheckpointUnavailableError(
                    f"task budget ledger unreachable: {exc!r}"
                ) from exc
            if reservation is not None:
                return reservation
            if not may_wait or time_left() <= delay:
                raise BudgetRefusedError(why)
            await self.sleep(delay)
            delay = min(delay * 2, RESERVE_WAIT_MAX_S)
        raise BudgetRefusedError(why)

    @staticmethod
    def _note_change(step: ModelStep, name: str, old: BreakerState, new: BreakerState) -> None:
        if old != new:
            step.breaker_changes.append((name, old, new))
            step.notes.append(f"breaker {name}: {old.value} -> {new.value}")
