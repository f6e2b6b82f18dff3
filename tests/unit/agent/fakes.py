"""Fakes the agent runtime tests own: a clock, a sleep that moves it, an event sink, a model."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hivetest import FakeClock

from hivebus.agent.models.base import ModelRequest, ModelResponse, TurnUsage
from hivebus.contracts import BreakerChanged, BudgetWarning, StepRecorded

__all__ = ["FakeClock"]  # re-exported: agent tests import it from here


class FakeSleep:
    """An injectable `sleep`: records each delay and advances a fake clock instead of waiting."""

    def __init__(self, clock: FakeClock) -> None:
        """Move `clock` on every sleep."""
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        """Record the delay, advance the clock, and let other tasks run once."""
        self.delays.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0)


class CollectingSink:
    """Keeps every event a run reports: steps, and budget warnings and breaker changes."""

    def __init__(self) -> None:
        """Start with no events."""
        self.events: list[StepRecorded] = []
        self.side: list[BudgetWarning | BreakerChanged] = []

    async def step(self, event: StepRecorded) -> None:
        """Record one step."""
        self.events.append(event)

    async def budget_warning(self, event: BudgetWarning) -> None:
        """Record a budget warning."""
        self.side.append(event)

    async def breaker_changed(self, event: BreakerChanged) -> None:
        """Record a breaker change."""
        self.side.append(event)


Respond = Callable[[ModelRequest], Awaitable[ModelResponse]]


class FunctionModel:
    """A model whose answers a test function computes; it keeps a copy of every request."""

    def __init__(
        self, respond: Respond, route: str = "function:test", bound: TurnUsage | None = None
    ) -> None:
        """Answer with `respond` under the name `route`, reserving `bound` per call."""
        self.route = route
        self.respond = respond
        self.bound = bound or TurnUsage()
        self.requests: list[ModelRequest] = []

    def usage_bound(self, request: ModelRequest) -> TurnUsage:  # noqa: ARG002 - a fixed bound
        """What each call reserves against the task budget (nothing unless told)."""
        return self.bound

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Record the request and answer it."""
        self.requests.append(request.model_copy(deep=True))
        return await self.respond(request)


def assistant_turns(request: ModelRequest) -> int:
    """How many assistant turns the conversation already has (the scripted model's position)."""
    return sum(1 for message in request.messages if message.role == "assistant")
