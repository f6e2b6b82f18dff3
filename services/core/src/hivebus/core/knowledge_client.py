"""Talking to the knowledge store from any service: writes through its stream, reads by request."""

from __future__ import annotations

import asyncio

from faststream.nats import NatsBroker
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from hivebus.contracts import subjects
from hivebus.contracts.knowledge import (
    NoteList,
    NoteListResult,
    NoteLog,
    NoteLogResult,
    NoteRead,
    NoteReadResult,
    NoteSearch,
    NoteSearchResult,
    NoteWrite,
    NoteWriteResult,
)
from hivebus.core import telemetry
from hivebus.core.publisher import Publisher

REQUEST_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 30.0


class KnowledgeUnavailableError(Exception):
    """The knowledge service did not answer in time."""

    retryable = True


async def wait_for_write(
    results: KeyValue, write_id: str, timeout_s: float
) -> NoteWriteResult | None:
    """The result of a write once the knowledge service applied it; None if not in `timeout_s`."""
    delay = 0.01
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    entry = await results.get(subjects.knowledge_result_key(write_id))
                except KeyNotFoundError:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.2)
                    continue
                return NoteWriteResult.model_validate_json(entry.value or b"{}")
    except TimeoutError:
        return None


class KnowledgeClient:
    """Client of the knowledge store.

    Writes go on the KNOWLEDGE stream (durable, applied in order by the one writer) and their
    result is read back from KV `knowledge` by write id. Reads are request/reply.
    """

    def __init__(self, broker: NatsBroker, results: KeyValue, publisher: Publisher) -> None:
        """Use a connected broker, the `knowledge` bucket and the service's publisher."""
        self.broker = broker
        self.results = results
        self.publisher = publisher

    async def write(self, write: NoteWrite, timeout_s: float = WRITE_TIMEOUT_S) -> NoteWriteResult:
        """Submit a write and wait for its result (conflicts come back as results)."""
        await self.publisher.publish(write)
        result = await wait_for_write(self.results, write.write_id, timeout_s)
        if result is None:
            raise KnowledgeUnavailableError(f"write {write.write_id} not applied in {timeout_s:g}s")
        return result

    async def _ask(self, subject: str, request: BaseModel, answer: type[BaseModel]) -> BaseModel:
        try:
            headers: dict[str, str] = {}
            telemetry.inject(headers)  # the read joins the asking run's trace
            reply = await self.broker.request(
                request, subject, timeout=REQUEST_TIMEOUT_S, headers=headers or None
            )
        except TimeoutError as exc:
            raise KnowledgeUnavailableError(f"no answer on {subject}") from exc
        return answer.model_validate_json(reply.body)

    async def read(self, path: str) -> NoteReadResult:
        """One note and its revision."""
        result = await self._ask(subjects.KNOWLEDGE_READ, NoteRead(path=path), NoteReadResult)
        assert isinstance(result, NoteReadResult)  # noqa: S101 - narrowed for the type checker
        return result

    async def list(self, prefix: str = "") -> NoteListResult:
        """Note paths under a folder."""
        result = await self._ask(subjects.KNOWLEDGE_LIST, NoteList(prefix=prefix), NoteListResult)
        assert isinstance(result, NoteListResult)  # noqa: S101 - narrowed for the type checker
        return result

    async def search(self, query: str, limit: int = 10) -> NoteSearchResult:
        """Ranked hits with snippets."""
        result = await self._ask(
            subjects.KNOWLEDGE_SEARCH, NoteSearch(query=query, limit=limit), NoteSearchResult
        )
        assert isinstance(result, NoteSearchResult)  # noqa: S101 - narrowed for the type checker
        return result

    async def log(self, path: str | None = None, limit: int = 20) -> NoteLogResult:
        """Commits, newest first."""
        result = await self._ask(
            subjects.KNOWLEDGE_LOG, NoteLog(path=path, limit=limit), NoteLogResult
        )
        assert isinstance(result, NoteLogResult)  # noqa: S101 - narrowed for the type checker
        return result
