"""One model step: the fallback chain, each model behind its breaker, retries, the task budget.

for each model of the chain (primary first):
    no breaker permit        -> skip it (noted): its circuit is open
    reserve an upper bound   -> refused: the task budget is exhausted (run ends)
    call, retrying transient errors (backoff + jitter, bounded by attempts and time)
    success                  -> settle the reservation with the call's cost, permit succeeds
    failure                  -> settle with nothing used, the permit fails (transient) or is
                                released (the call said nothing about health), next model
every model failed or skipped -> ModelsExhausted

The whole step is one `chat <model>` span (`tracing.chat`): retries and fallbacks are its events.

The cost of a call is computed here, once (`Price.cost`), and handed to the loop on the
`ModelStep`. When a settle crosses the task's warning threshold the caller publishes the
`BudgetWarning` itself; a warning that cannot be published is logged, never ends the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hivebus.agent.checkpoint import CheckpointUnavailableError
from hivebus.agent.errors import AgentError, ModelError
from hivebus.agent.models.base import (
    CHARS_PER_TOKEN_BOUND,
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    ToolSpec,
    request_chars,
)
from hivebus.agent.tool import Tool
from hivebus.agent.tracing import budget_warning, chat_span, retried
from hivebus.contracts import BudgetWarning, RetryRecord, TaskBudget
from hivebus.core import EventSink, Price, get_logger
from hivebus.core.budget import BudgetLedger, LedgerState, Reservation
from hivebus.core.reliability import BreakerRegistry, RetryAttempt, RetryPolicy, retry_transient

log = get_logger(__name__)


class ModelsExhaustedError(AgentError):
    """No model of the chain could answer: each failed or had its breaker open."""


class BudgetRefusedError(AgentError):
    """The task budget cannot cover the next model call."""


class WallClockExceededError(Exception):
    """The run's wall-clock limit expired during a model call (a signal inside the loop)."""


class TokenLimitAheadError(Exception):
    """The next model call could take the run past its token limit."""

    def __init__(self, needed: int) -> None:
        """Remember how many tokens the call could need."""
        super().__init__(needed)
        self.needed = needed


DEFAULT_MAX_OUTPUT = 4096
"""Output tokens asked for per model call, lowered when the run has fewer tokens left."""

MIN_OUTPUT_TOKENS = 16
"""Below this much room for output, a model call is not worth making."""


def bounded_request(
    system: str,
    messages: list[Message],
    tools: list[Tool],
    *,
    room: int,
    model: Model,
    output_schema: dict[str, Any] | None = None,
) -> ModelRequest:
    """The next request, asking for no more output than `room` tokens leave after its input.

    Raises:
        TokenLimitAheadError: `model`'s bound for the call does not fit in `room`.
    """
    request = ModelRequest(
        system=system,
        messages=messages,
        tools=[
            ToolSpec(name=t.name, description=t.description, input_schema=t.input_schema())
            for t in tools
        ],
        output_schema=output_schema,
    )
    input_bound = request_chars(request) // CHARS_PER_TOKEN_BOUND + 1
    request.max_output_tokens = max(1, min(DEFAULT_MAX_OUTPUT, room - input_bound))
    bound = model.usage_bound(request)
    needed = bound.input_tokens + bound.output_tokens
    if needed > room or room - input_bound < MIN_OUTPUT_TOKENS:
        raise TokenLimitAheadError(needed)
    return request


RESERVE_WAIT_INITIAL_S = 0.05
RESERVE_WAIT_MAX_S = 1.0
RESERVE_WAIT_ATTEMPTS = 40
"""While other calls' reservations block the task budget, wait for them this long, at most."""


@dataclass
class ModelStep:
    """What happened while getting one answer: who answered, its cost, retries, fallbacks."""

    route: str = ""
    cost_usd: float = 0.0
    """USD of the answer (0 until one came), from the answering model's price."""
    retries: list[RetryRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class BudgetGate:
    """The task budget a caller reserves against."""

    ledger: BudgetLedger
    task_id: str
    budget: TaskBudget
    holder: str | None = None
    """Who reserves: one sub-task attempt, so a resumed run replaces its dead call's hold."""

    async def read(self) -> LedgerState:
        """The task's ledger as it is now (an empty one before any call reserved).

        Raises:
            CheckpointUnavailableError: the ledger cannot be reached (retry the delivery).
        """
        try:
            state, _ = await self.ledger.store.update(self.task_id, _leave)
        except Exception as exc:  # the bus, not the run: retry the delivery later
            raise CheckpointUnavailableError(f"task budget ledger unreachable: {exc!r}") from exc
        return state or LedgerState(
            max_tokens=self.budget.max_tokens, max_cost_usd=self.budget.max_cost_usd
        )


def _leave(current: LedgerState | None) -> None:
    """A ledger change that changes nothing: the update only reads."""


@dataclass(frozen=True)
class Estimate:
    """The most one model call can use: tokens, and their cost at the dearest model's price."""

    tokens: int
    cost_usd: float


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
        events: EventSink | None = None,
    ) -> None:
        """Try `models` in order; publish the task's budget warning through `events`."""
        self.models = models
        self.breakers = breakers
        self.retry = retry
        self.price_for = price_for
        self.sleep = sleep
        self.budget = budget
        self.events = events

    def estimate(self, request: ModelRequest) -> Estimate:
        """What `request` can use at most, whichever model of the chain answers it.

        The bound each model reserves before it is called (`usage_bound`), priced as `_try`
        prices it: the largest over the chain.
        """
        tokens, cost = 0, 0.0
        for model in self.models:
            bound = model.usage_bound(request)
            tokens = max(tokens, bound.input_tokens + bound.output_tokens)
            cost = max(
                cost, self.price_for(model.route).cost(bound.input_tokens, bound.output_tokens)
            )
        return Estimate(tokens, cost)

    async def call(
        self, request: ModelRequest, time_left: Callable[[], float], step: ModelStep
    ) -> ModelResponse:
        """The first answer the chain gives, recording in `step` what happened on the way.

        Raises:
            ModelsExhaustedError: every model failed or was skipped.
            BudgetRefusedError: the task budget cannot cover the call.
            WallClockExceededError: the run's time ran out during a call.
        """
        with chat_span(request, self.models) as chat:
            for model in self.models:
                chat.trying(model.route)
                step.route = model.route
                breaker = self.breakers.get(f"model:{model.route}")
                permit = breaker.allow()
                if permit is None:
                    wait = breaker.seconds_until_trial()
                    step.notes.append(f"{model.route}: circuit open for {wait:.1f}s more, skipped")
                    chat.passed(model.route, step.notes[-1])
                    continue
                with permit:  # released if the call ends any other way (cancelled, crashed)
                    try:
                        response = await self._try(model, request, time_left, step)
                    except ModelError as exc:
                        if exc.retryable:
                            permit.failure()
                        else:
                            permit.release()
                        step.notes.append(f"{model.route} failed: {exc}")
                        chat.passed(model.route, str(exc))
                        continue
                    permit.success()
                    chat.answered(response, step.cost_usd)
                    return response
            tried = ", ".join(m.route for m in self.models)
            raise ModelsExhaustedError(
                f"no model could answer (tried {tried}): " + "; ".join(step.notes)
            )

    async def _try(
        self, model: Model, request: ModelRequest, time_left: Callable[[], float], step: ModelStep
    ) -> ModelResponse:
        price = self.price_for(model.route)
        reservation = None
        if self.budget is not None:
            bound = model.usage_bound(request)
            held_cost = price.cost(bound.input_tokens, bound.output_tokens)
            reservation = await self._reserve(
                bound.input_tokens + bound.output_tokens, held_cost, time_left
            )

        def record(attempt: RetryAttempt) -> None:
            retried("model", model.route, attempt)
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
            used_cost = price.cost(response.usage.input_tokens, response.usage.output_tokens)
            step.cost_usd = used_cost
        except WallClockExceededError:
            if reservation is not None:  # the call may have used anything up to its bound
                used_tokens, used_cost = reservation.tokens, reservation.cost_usd
            raise
        finally:
            if reservation is not None:
                await self._settle(reservation, used_tokens, used_cost)
        return response

    async def _settle(self, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        """Replace a reservation by what the call used; warn once if the task crossed 80%."""
        assert self.budget is not None  # noqa: S101 - only called with a budget
        try:
            crossed = await self.budget.ledger.settle(reservation, tokens, cost_usd)
        except Exception as exc:  # the bus, not the run: retry the delivery later
            raise CheckpointUnavailableError(f"task budget ledger unreachable: {exc!r}") from exc
        if crossed is not None:
            await self._warn(crossed)

    async def _warn(self, state: LedgerState) -> None:
        assert self.budget is not None  # noqa: S101 - only called with a budget
        log.warning(
            "budget_warning", used_tokens=state.used_tokens, used_cost_usd=state.used_cost_usd
        )
        budget_warning(state)
        if self.events is None:
            return
        try:
            await self.events.publish(
                BudgetWarning(
                    task_id=self.budget.task_id,
                    used_tokens=state.used_tokens,
                    max_tokens=state.max_tokens,
                    used_cost_usd=state.used_cost_usd,
                    max_cost_usd=state.max_cost_usd,
                )
            )
        except Exception as exc:  # noqa: BLE001 - a lost warning must not end the run
            log.warning("budget_warning_lost", error=repr(exc))

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
