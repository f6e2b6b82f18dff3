"""The knowledge service's spans: one `knowledge.write <path>` per write, in the writer's trace.

Writes go through the real `Settler` (which makes the message's trace context current) into
`KnowledgeService.write`, over a real temporary Git repository; only the results bucket and
the announcing publisher are faked. Writes handled at once are applied by one group commit in a
task of its own, so the span must be made where each write's context is current: its handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pydantic import BaseModel

from hivebus.contracts.knowledge import NoteRead, NoteWrite
from hivebus.core import Settler, telemetry
from hivebus.knowledge.service import SERVICE_CONTEXT, Handlers, KnowledgeService
from hivebus.knowledge.store import KnowledgeStore

TRACE = 0x5EED << 64 | 0xCAFE


class Results:
    """The `knowledge` results bucket in memory: `get` and `put`, as the service uses them."""

    def __init__(self) -> None:
        """Empty."""
        self.values: dict[str, bytes] = {}

    async def get(self, key: str) -> KeyValue.Entry:
        """The entry at `key`, or `KeyNotFoundError`."""
        if key not in self.values:
            raise KeyNotFoundError
        return KeyValue.Entry("knowledge", key, self.values[key], 1, None, None, None)

    async def put(self, key: str, value: bytes) -> int:
        """Keep `value` at `key`."""
        self.values[key] = value
        return len(self.values)


class Sink:
    """Takes what the service announces."""

    def __init__(self) -> None:
        """Nothing published yet."""
        self.published: list[BaseModel] = []

    async def publish(self, message: BaseModel) -> None:
        """Keep `message`."""
        self.published.append(message)


class Message:
    """A delivered message as the handlers see it: headers and settlement."""

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        """Carrying `headers`."""
        self.headers = headers or {}
        self.raw_message = SimpleNamespace(subject="hive.knowledge.write", metadata=None)
        self.settled: list[str] = []

    async def ack(self) -> None:
        """Record an ack."""
        self.settled.append("ack")

    async def nack(self, delay: float | None = None) -> None:  # noqa: ARG002 - as the API
        """Record a nak."""
        self.settled.append("nak")


def write(path: str, body: str, expected: str | None = None) -> NoteWrite:
    """A write of task `t-kb` by one run."""
    return NoteWrite(
        task_id="t-kb",
        subtask_id="s-1",
        run_id="r-1",
        role="researcher",
        path=path,
        body=body,
        expected_revision=expected,
    )


def headers(span_id: int) -> dict[str, str]:
    """The headers of a message published inside span `span_id` of `TRACE`."""
    return {telemetry.TRACEPARENT: telemetry.traceparent(TRACE, span_id)}


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on, in memory; off again afterwards."""
    spans = InMemorySpanExporter()
    telemetry.install_for_tests(spans)
    yield spans
    telemetry.uninstall_for_tests()


@pytest.fixture
def service(tmp_path: Path) -> KnowledgeService:
    """The service over a fresh repository."""
    sink = Sink()
    return KnowledgeService(
        KnowledgeStore(tmp_path / "kb"),
        Results(),  # type: ignore[arg-type]
        sink,
        Settler(sink, 0.0),
    )


async def deliver(service: KnowledgeService, note: NoteWrite, message: Message) -> None:
    """Hand the service one write message, settled by the real settler."""
    await service.settler.run(message, service.write(note))  # type: ignore[arg-type]


def attributes(span: ReadableSpan) -> dict[str, Any]:
    """A span's attributes as a plain dict."""
    return dict(span.attributes or {})


async def test_writes_of_one_batch_are_each_a_span_under_their_own_message(
    exporter: InMemorySpanExporter, service: KnowledgeService
) -> None:
    """Writes handled at once (one group commit) each get a span whose parent is their message's.

    Each span carries the path, the write id, the commit and `committed`.
    """
    first, second = write("tasks/t-kb/a.md", "A."), write("tasks/t-kb/b.md", "B.")
    messages = [Message(headers(0xA1)), Message(headers(0xB2))]
    await asyncio.gather(
        deliver(service, first, messages[0]), deliver(service, second, messages[1])
    )
    assert [m.settled for m in messages] == [["ack"], ["ack"]]
    spans = {span.name: span for span in exporter.get_finished_spans()}
    for note, parent in ((first, 0xA1), (second, 0xB2)):
        span = spans[f"knowledge.write {note.path}"]
        assert span.context.trace_id == TRACE
        assert span.parent is not None
        assert span.parent.span_id == parent
        got = attributes(span)
        assert got["hivebus.knowledge.path"] == note.path
        assert got["hivebus.knowledge.write_id"] == note.write_id
        assert got["hivebus.knowledge.status"] == "committed"
        assert got["hivebus.knowledge.commit"]
        assert span.status.status_code is not StatusCode.ERROR


async def test_an_unchanged_and_a_conflicting_write_say_so(
    exporter: InMemorySpanExporter, service: KnowledgeService
) -> None:
    """The same content again is `unchanged`; a stale revision is `conflict` (no commit)."""
    note = write("tasks/t-kb/a.md", "A.")
    await deliver(service, note, Message(headers(0x1)))
    await deliver(service, write(note.path, "A."), Message(headers(0x2)))
    await deliver(service, write(note.path, "Other.", expected="new"), Message(headers(0x3)))
    by_parent = {
        span.parent.span_id: attributes(span)
        for span in exporter.get_finished_spans()
        if span.parent is not None
    }
    assert [by_parent[p]["hivebus.knowledge.status"] for p in (0x1, 0x2, 0x3)] == [
        "committed",
        "unchanged",
        "conflict",
    ]
    assert "hivebus.knowledge.commit" not in by_parent[0x3]


async def test_a_read_in_a_trace_is_a_span_and_one_without_is_none(
    exporter: InMemorySpanExporter, service: KnowledgeService
) -> None:
    """A read whose request carries a trace context is a `knowledge.read` span under it.

    A request without one (a person's `hivebus kb read`) starts no trace of its own.
    """
    await deliver(service, write("tasks/t-kb/a.md", "A."), Message(headers(0x1)))
    exporter.clear()
    local: dict[str, Message] = {}
    context = SimpleNamespace(
        get=lambda name: {SERVICE_CONTEXT: service}[name],
        get_local=lambda name: local[name],
    )
    handlers = Handlers(SimpleNamespace(context=context))  # type: ignore[arg-type]
    local["message"] = Message(headers(0xE1))
    found = await handlers.on_read(NoteRead(path="tasks/t-kb/a.md"))
    assert found.found
    local["message"] = Message()
    await handlers.on_read(NoteRead(path="tasks/t-kb/a.md"))
    [span] = exporter.get_finished_spans()
    assert span.name == "knowledge.read"
    assert span.parent is not None
    assert (span.context.trace_id, span.parent.span_id) == (TRACE, 0xE1)
    assert attributes(span)["hivebus.knowledge.path"] == "tasks/t-kb/a.md"


async def test_nothing_is_recorded_while_tracing_is_off(service: KnowledgeService) -> None:
    """Off again (the default): writes are applied as ever, and no span reaches any exporter.

    The service asks for the current telemetry at each write, so none is kept from before.
    """
    exporter = InMemorySpanExporter()
    telemetry.install_for_tests(exporter)
    telemetry.uninstall_for_tests()
    message = Message(headers(0x1))
    await deliver(service, write("tasks/t-kb/a.md", "A."), message)
    assert message.settled == ["ack"]
    assert exporter.get_finished_spans() == ()
