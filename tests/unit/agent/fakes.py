"""Fakes the agent runtime tests own: a sleep, a sink, function models, a bucket, a message.

The bucket (`FakeKV`) and the work message (`FakeWork`) drive the service without a server;
`Traced` reads what the SDK's in-memory exporter and reader got.

`FakeClock` lives in `hivetest` (other suites use it too); it is re-exported here, and
`FakeSleep` advances it instead of waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from hivetest import FakeClock
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
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


class BucketDownError(Exception):
    """What `FakeKV` raises for a write it was told to refuse (the bus went away)."""


@dataclass
class FakeKV:
    """A KV bucket in memory with `KeyValue`'s get, create and compare-and-set update.

    `refuse_write` makes that write (counted from 1 over creates and updates) raise
    `BucketDownError`, as a bucket the worker lost would.
    """

    values: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    sequence: int = 0
    writes: int = 0
    refuse_write: int | None = None

    async def get(self, key: str) -> KeyValue.Entry:
        """The entry at `key`, or `KeyNotFoundError`."""
        if key not in self.values:
            raise KeyNotFoundError
        value, revision = self.values[key]
        return KeyValue.Entry("runs", key, value, revision, None, None, None)

    def _write(self, key: str, value: bytes) -> int:
        self.writes += 1
        if self.writes == self.refuse_write:
            raise BucketDownError("the bucket went away")
        self.sequence += 1
        self.values[key] = (value, self.sequence)
        return self.sequence

    async def create(self, key: str, value: bytes) -> int:
        """Write `key` only if it does not exist."""
        if key in self.values:
            raise KeyWrongLastSequenceError("key exists")
        return self._write(key, value)

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        """Write `key` only if its revision is still `last`."""
        if key not in self.values or self.values[key][1] != last:
            raise KeyWrongLastSequenceError("wrong last sequence")
        return self._write(key, value)


class FakeWork:
    """A work message as the agent's handler gets one: headers, JetStream metadata, settlement."""

    def __init__(
        self,
        body: BaseModel,
        *,
        headers: dict[str, str] | None = None,
        delivered: int = 1,
        stored_at: datetime,
        subject: str = "hive.work.writer",
    ) -> None:
        """`body` delivered the `delivered`-th time, stored in the stream at `stored_at`."""
        self.body = body.model_dump_json().encode()
        self.headers = headers or {}
        self.message_id = "m1"
        self.raw_message = SimpleNamespace(
            subject=subject,
            metadata=SimpleNamespace(
                num_delivered=delivered,
                timestamp=stored_at,
                stream="WORK",
                sequence=SimpleNamespace(stream=1, consumer=delivered),
            ),
        )
        self.settled: list[str] = []

    async def ack(self) -> None:
        """Record an ack."""
        self.settled.append("ack")

    async def nack(self, delay: float | None = None) -> None:  # noqa: ARG002 - as the API
        """Record a nak."""
        self.settled.append("nak")

    async def reject(self) -> None:
        """Record a term."""
        self.settled.append("term")

    async def in_progress(self) -> None:
        """A heartbeat: nothing to record."""


@dataclass
class Traced:
    """What the installed telemetry exported: spans and metrics."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    @property
    def spans(self) -> Sequence[ReadableSpan]:
        """Every finished span, in the order they ended."""
        return self.exporter.get_finished_spans()

    def named(self, prefix: str) -> list[ReadableSpan]:
        """The spans whose name starts with `prefix`."""
        return [s for s in self.spans if s.name.startswith(prefix)]

    def one(self, prefix: str) -> ReadableSpan:
        """The only span whose name starts with `prefix`."""
        [found] = self.named(prefix)
        return found

    def points(self, name: str) -> list[tuple[dict[str, Any], float]]:
        """The data points of metric `name`: attributes and value (a histogram's sum)."""
        data = self.reader.get_metrics_data()
        found: list[tuple[dict[str, Any], float]] = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        total = point.sum if value is None else value  # type: ignore[union-attr]
                        found.append((dict(point.attributes or {}), total))
        return found
