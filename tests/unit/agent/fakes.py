"""Fakes the agent runtime tests own: a sleep, an event sink, a model computed by a function.

`FakeClock` lives in `hivetest` (other suites use it too); it is re-exported here, and
`FakeSleep` advances it instead of waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hivetest import FakeClock
from pydantic import BaseModel

from hivebus.agent.models.base import ModelRequest, ModelResponse, TurnUsage
from hivebus.contracts import StepRecorded

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
    """An `EventSink` that keeps what is published: steps in `events`, the rest in `side`."""

    def __init__(self) -> None:
        """Start with no events."""
        self.events: list[StepRecorded] = []
        self.side: list[BaseModel] = []

    async def publish(self, message: BaseModel) -> None:
        """Keep one message."""
        if isinstance(message, StepRecorded):
            self.events.append(message)
        else:
            self.side.append(message)


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
