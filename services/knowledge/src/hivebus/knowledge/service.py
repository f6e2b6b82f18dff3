"""The knowledge service: the only writer of the repository.

Writes arrive on the KNOWLEDGE stream and are applied one at a time (one pull worker), each
as one commit; the result is stored in KV `knowledge` under the write id before the message
is acked, so a redelivered write (after a crash) is answered from there, not applied twice.
Every commit is announced as `NoteCommitted`. Reads, listing, log and search are
request/reply, served from other threads, so they never wait behind a write.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.annotations import NatsMessage
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

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
)
from hivebus.contracts.subjects import EventKind
from hivebus.core import Settings, bind_ids, get_logger, jetstream, new_broker, publish_event
from hivebus.knowledge.store import KnowledgeStore, author_of

log = get_logger(__name__)

NAK_DELAY_S = 1.0
READERS = "knowledge-readers"


class KnowledgeService:
    """Owns one repository."""

    def __init__(self, settings: Settings, root: Path, broker: NatsBroker) -> None:
        """Nothing is opened until `prepare()`."""
        self.settings = settings
        self.root = root
        self.broker = broker
        self.store: KnowledgeStore | None = None
        self.results: KeyValue | None = None

    async def prepare(self) -> None:
        """Open the repository (repairing what a crash left) and the results bucket."""
        self.store = await asyncio.to_thread(KnowledgeStore, self.root)
        js = await jetstream(self.broker)
        self.results = await js.key_value(subjects.KNOWLEDGE_BUCKET)
        log.info("knowledge_ready", root=str(self.root))

    def _store(self) -> KnowledgeStore:
        if self.store is None:
            raise RuntimeError("KnowledgeService.prepare() was not awaited")
        return self.store

    async def on_write(self, write: NoteWrite, msg: NatsMessage) -> None:
        """Apply one write, record its result, announce the commit, then ack."""
        bind_ids(task_id=write.task_id, subtask_id=write.subtask_id, run_id=write.run_id)
        assert self.results is not None  # noqa: S101 - set by prepare()
        key = f"write.{write.write_id}"
        try:
            try:
                await self.results.get(key)
            except KeyNotFoundError:
                result = await asyncio.to_thread(self._store().apply, write)
                await self.results.put(key, result.model_dump_json().encode())
                if result.status == "committed" and result.commit and result.revision:
                    await publish_event(
                        self.broker,
                        NoteCommitted(
                            task_id=write.task_id,
                            subtask_id=write.subtask_id,
                            path=result.path,
                            revision=result.revision,
                            commit=result.commit,
                            author=author_of(write),
                        ),
                        subject=subjects.event(write.task_id, EventKind.NOTE_COMMITTED),
                        stream=subjects.EVENTS_STREAM,
                        msg_id=f"kb:{write.write_id}:committed",
                        settings=self.settings,
                    )
                log.info("note_written", path=result.path, status=result.status)
        except Exception:
            log.exception("note_write_failed")
            await msg.nack(delay=NAK_DELAY_S)
            return
        await msg.ack()

    async def on_read(self, request: NoteRead) -> NoteReadResult:
        """A note at HEAD."""
        return await asyncio.to_thread(self._store().read, request.path)

    async def on_list(self, request: NoteList) -> NoteListResult:
        """Note paths under a folder."""
        return await asyncio.to_thread(self._store().list, request.prefix)

    async def on_search(self, request: NoteSearch) -> NoteSearchResult:
        """Ranked full-text hits."""
        return await asyncio.to_thread(self._store().search, request.query, request.limit)

    async def on_log(self, request: NoteLog) -> NoteLogResult:
        """Commits, newest first."""
        entries = await asyncio.to_thread(self._store().repo.log, request.path, request.limit)
        return NoteLogResult(
            entries=[
                NoteLogEntry(commit=e.commit, author=e.author, date=e.date, subject=e.subject)
                for e in entries
            ]
        )


def build_knowledge_broker(
    settings: Settings, root: Path, url: str
) -> tuple[NatsBroker, KnowledgeService]:
    """A FastStream broker with the writer and the readers."""
    broker = new_broker(url, "knowledge")
    service = KnowledgeService(settings, root, broker)
    broker.subscriber(
        subjects.KNOWLEDGE_WRITE,
        stream=JStream(subjects.KNOWLEDGE_STREAM, declare=False),
        durable=subjects.KNOWLEDGE_WRITER_CONSUMER,
        pull_sub=PullSub(batch_size=1, timeout=1.0),
        ack_policy=AckPolicy.MANUAL,
        title="knowledge.write",
        description="NoteWrite, applied one at a time; result in KV knowledge, NoteCommitted.",
    )(service.on_write)
    broker.subscriber(subjects.KNOWLEDGE_READ, queue=READERS)(service.on_read)
    broker.subscriber(subjects.KNOWLEDGE_LIST, queue=READERS)(service.on_list)
    broker.subscriber(subjects.KNOWLEDGE_SEARCH, queue=READERS)(service.on_search)
    broker.subscriber(subjects.KNOWLEDGE_LOG, queue=READERS)(service.on_log)
    return broker, service
