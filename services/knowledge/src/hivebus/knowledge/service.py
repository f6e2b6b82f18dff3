"""The knowledge service: the only writer of the repository.

Writes arrive on the KNOWLEDGE stream, pulled up to `WRITE_BATCH` at a time and handled
concurrently, and are applied in the order they were fetched, each as its own commit, by one
group committer (`hivebus.knowledge.committer`) that makes a whole batch durable with one sync.
For each write, in this order:

    apply the write (a commit, durable and on HEAD)  ->  announce it (`NoteCommitted`)  ->
    store its result in KV `knowledge` under `write.<id>`  ->  ack

A crash (or a failed publish) anywhere in it redelivers the write. A write whose result is
stored was announced already and is only acked. Any other is applied again: the store
recognises a commit this write made before (its message names the write id) and answers
`committed` with it, so the commit is announced at least once; subscribers drop a repeat by
its message id (`kb:<write id>:committed`). A write whose commit fails is settled alone (nak
or terminate, by its error); the others of its batch are committed all the same. Messages are
settled only by `Settler`.

Reads, listing, log and search are request/reply, served from other threads, so they never
wait behind a write. `start_knowledge` is the entry point: it opens everything, then starts
the broker, so every handler finds a ready service in FastStream's context.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from nats.js.kv import KeyValue
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span

from hivebus.contracts import NoteCommitted, subjects
from hivebus.contracts.knowledge import (
    NoteList,
    NoteListResult,
    NoteLog,
    NoteLogEntry,
    NoteLogResult,
    NoteRead,
    NoteReadResult,
    NoteSearch,
    NoteSearchResult,
    NoteWrite,
    NoteWriteResult,
)
from hivebus.core import (
    EventSink,
    Publisher,
    Settings,
    Settler,
    bind_ids,
    get_logger,
    jetstream,
    new_broker,
    telemetry,
)
from hivebus.core.bus import pull_inbox
from hivebus.knowledge.committer import GroupCommitter
from hivebus.knowledge.store import KnowledgeStore, author_of

__all__ = ["SERVICE_CONTEXT", "KnowledgeService", "build_knowledge_broker", "start_knowledge"]

log = get_logger(__name__)

READERS = "knowledge-readers"
"""Queue group of the read handlers: each request is answered by one replica."""

SERVICE_CONTEXT = "hivebus_knowledge"
"""Name of the ready `KnowledgeService` in the broker's FastStream context."""

WRITE_BATCH = 64
"""Writes one fetch pulls, handled at once, and the most one group commit applies.

A batch costs one file-system sync (a few milliseconds) plus its commits, so batching is what
lets the single writer keep up with many agents; it stays far below the consumer's
`max_ack_pending` and a batch ends well within its ack wait.
"""


class KnowledgeService:
    """Owns one repository: applies writes in order, answers reads."""

    def __init__(
        self, store: KnowledgeStore, results: KeyValue, publisher: EventSink, settler: Settler
    ) -> None:
        """Serve `store`; keep results in `results`; announce through `publisher`."""
        self.store = store
        self.results = results
        self.publisher = publisher
        self.settler = settler
        self.committer = GroupCommitter(store, results, WRITE_BATCH)

    async def write(self, write: NoteWrite) -> NoteWriteResult:
        """Apply one write (once), announce its commit, then store its result.

        The write takes its place in the committer's line before anything is awaited, so
        writes are applied in the order their handlers started. A write whose result is
        stored already is answered from there, untouched.
        """
        with traced(f"knowledge.write {write.path}", write.path) as span:
            result = await self._write(write)
            span.set_attribute("hivebus.knowledge.status", result.status)
            if result.commit:
                span.set_attribute("hivebus.knowledge.commit", result.commit)
            span.set_attribute("hivebus.knowledge.write_id", write.write_id)
            return result

    async def _write(self, write: NoteWrite) -> NoteWriteResult:
        applied = await self.committer.submit(write)
        result = applied.result
        if applied.stored_before:
            return result
        if result.status == "committed" and result.commit and result.revision:
            await self.publisher.publish(
                NoteCommitted(
                    task_id=write.task_id,
                    write_id=write.write_id,
                    subtask_id=write.subtask_id,
                    path=result.path,
                    revision=result.revision,
                    commit=result.commit,
                    author=author_of(write),
                )
            )
        key = subjects.knowledge_result_key(write.write_id)
        await self.results.put(key, result.model_dump_json().encode())
        log.info("note_written", path=result.path, status=result.status)
        return result

    async def read(self, request: NoteRead) -> NoteReadResult:
        """A note at HEAD."""
        return await asyncio.to_thread(self.store.read, request.path)

    async def list(self, request: NoteList) -> NoteListResult:
        """Note paths under a folder."""
        return await asyncio.to_thread(self.store.list, request.prefix)

    async def search(self, request: NoteSearch) -> NoteSearchResult:
        """Ranked full-text hits."""
        return await asyncio.to_thread(self.store.search, request.query, request.limit)

    async def log(self, request: NoteLog) -> NoteLogResult:
        """Commits, newest first."""
        entries = await asyncio.to_thread(self.store.repo.log, request.path, request.limit)
        return NoteLogResult(
            entries=[
                NoteLogEntry(commit=e.commit, author=e.author, date=e.date, subject=e.subject)
                for e in entries
            ]
        )


@contextlib.contextmanager
def traced(name: str, what: str, parent: Context | None = None) -> Iterator[Span]:
    """A span around one knowledge operation (a no-op one while tracing is off)."""
    made = telemetry.current()
    if not made.enabled:
        yield INVALID_SPAN
        return
    with made.tracer.start_as_current_span(
        name, context=parent, attributes={"hivebus.knowledge.path": what}
    ) as span:
        yield span


class Handlers:
    """The subscribers' functions; each finds the ready service and its message in the broker.

    They take only the message body (FastStream would resolve `Context()` arguments in a
    worker thread per message), as the orchestrator's and the agent's handlers do.
    """

    def __init__(self, broker: NatsBroker) -> None:
        """Serve the subscribers of `broker`."""
        self.broker = broker

    def _service(self) -> KnowledgeService:
        service: KnowledgeService = self.broker.context.get(SERVICE_CONTEXT)
        return service

    async def on_write(self, write: NoteWrite) -> None:
        """Apply one write; settle the message by how it ended."""
        bind_ids(task_id=write.task_id, subtask_id=write.subtask_id, run_id=write.run_id)
        msg: NatsMessage = self.broker.context.get_local("message")
        service = self._service()
        await service.settler.run(msg, service.write(write))

    async def on_read(self, request: NoteRead) -> NoteReadResult:
        """Answer a read (in the asker's trace, when its request carries one)."""
        with self._traced("knowledge.read", request.path):
            return await self._service().read(request)

    def _traced(self, name: str, what: str) -> AbstractContextManager[Span]:
        """A span for a request that carries a trace context (reads of a run); else none."""
        msg: NatsMessage = self.broker.context.get_local("message")
        if telemetry.TRACEPARENT not in (msg.headers or {}):
            return contextlib.nullcontext(INVALID_SPAN)
        return traced(name, what, telemetry.extract(msg.headers))

    async def on_list(self, request: NoteList) -> NoteListResult:
        """Answer a listing."""
        with self._traced("knowledge.list", request.prefix):
            return await self._service().list(request)

    async def on_search(self, request: NoteSearch) -> NoteSearchResult:
        """Answer a search."""
        with self._traced("knowledge.search", request.query[:200]):
            return await self._service().search(request)

    async def on_log(self, request: NoteLog) -> NoteLogResult:
        """Answer a history request."""
        return await self._service().log(request)


def build_knowledge_broker(settings: Settings, url: str) -> NatsBroker:
    """A FastStream broker with the writer and the readers; the service is set by the caller."""
    broker = new_broker(url, "knowledge", settings)
    on = Handlers(broker)
    broker.subscriber(
        subjects.KNOWLEDGE_WRITE,
        stream=JStream(subjects.KNOWLEDGE_STREAM, declare=False),
        durable=subjects.KNOWLEDGE_WRITER_CONSUMER,
        pull_sub=PullSub(batch_size=WRITE_BATCH, timeout=1.0),
        inbox_prefix=pull_inbox(settings),
        max_workers=WRITE_BATCH,
        ack_policy=AckPolicy.MANUAL,
        title="knowledge.write",
        description="NoteWrite, applied in fetch order, many per durable sync; NoteCommitted, "
        "then the result in KV.",
    )(on.on_write)
    broker.subscriber(subjects.KNOWLEDGE_READ, queue=READERS)(on.on_read)
    broker.subscriber(subjects.KNOWLEDGE_LIST, queue=READERS)(on.on_list)
    broker.subscriber(subjects.KNOWLEDGE_SEARCH, queue=READERS)(on.on_search)
    broker.subscriber(subjects.KNOWLEDGE_LOG, queue=READERS)(on.on_log)
    return broker


async def start_knowledge(settings: Settings, root: Path, url: str) -> NatsBroker:
    """Start the knowledge service over the repository at `root` (the topology must exist).

    Opens the repository (repairing what a crash left) and the results bucket before any
    handler runs; returns the started broker, which the caller stops.
    """
    broker = build_knowledge_broker(settings, url)
    try:
        await broker.connect()
        store = await asyncio.to_thread(KnowledgeStore, root)
        results = await (await jetstream(broker)).key_value(subjects.KNOWLEDGE_BUCKET)
        publisher = Publisher(broker, settings.publish_timeout_s)
        service = KnowledgeService(
            store, results, publisher, Settler(publisher, settings.nak_delay_s)
        )
        broker.context.set_global(SERVICE_CONTEXT, service)
        await broker.start()
    except BaseException:
        await broker.stop()
        raise
    log.info("knowledge_ready", root=str(root))
    return broker
