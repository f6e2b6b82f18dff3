"""Group commit: the writes that handlers hand in, applied in that order, many per batch.

    handler    submit(write) -> a future          (called before the handler's first await,
                                                    so the order of submits is fetch order)
    committer  take up to `max_batch` queued writes, in order
               -> look their results up in KV: a write answered before is not applied again
                  (not for a write to a note that was never written: nothing to find, see
                  `KnowledgeStore.never_written`)
               -> `KnowledgeStore.apply_many` of the others, in a worker thread
               -> resolve each future with its result (or its own error)

One batch runs at a time; what arrives meanwhile waits for the next, so a batch grows with the
load and one durable sync serves all its writes. The committer runs while there is something
to do and ends when the queue is empty; the next `submit` starts it again.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from dataclasses import dataclass

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from hivebus.contracts import subjects
from hivebus.contracts.knowledge import NoteWrite, NoteWriteResult
from hivebus.knowledge.errors import KnowledgeError
from hivebus.knowledge.store import KnowledgeStore

__all__ = ["Applied", "GroupCommitter"]


@dataclass(frozen=True, slots=True)
class Applied:
    """How one submitted write ended."""

    result: NoteWriteResult
    """Its result: new, or the one stored for it before."""
    stored_before: bool
    """True when the result was in KV already: announced and stored, nothing left to do."""


class GroupCommitter:
    """Applies submitted writes in submission order, in batches of at most `max_batch`."""

    def __init__(self, store: KnowledgeStore, results: KeyValue, max_batch: int) -> None:
        """Apply through `store`; look earlier results up in `results`."""
        self.store = store
        self.results = results
        self.max_batch = max_batch
        self._queue: deque[tuple[NoteWrite, asyncio.Future[Applied]]] = deque()
        self._running: asyncio.Task[None] | None = None

    def submit(self, write: NoteWrite) -> asyncio.Future[Applied]:
        """Queue `write` behind every write submitted before it; the future says how it ended.

        Not a coroutine: nothing runs between a handler's call and the write's place in line.
        """
        done = asyncio.get_running_loop().create_future()
        self._queue.append((write, done))
        if self._running is None:
            # A context of its own: the ids the first handler bound belong to its write alone.
            self._running = asyncio.create_task(
                self._drain(), name="knowledge-group-commit", context=contextvars.Context()
            )
        return done

    async def _drain(self) -> None:
        """Apply batches until the queue is empty."""
        batch: list[tuple[NoteWrite, asyncio.Future[Applied]]] = []
        try:
            while self._queue:
                count = min(len(self._queue), self.max_batch)
                batch = [self._queue.popleft() for _ in range(count)]
                await self._apply(batch)
        except BaseException as exc:  # cancelled with the loop, say: no future is left waiting
            for _, done in [*batch, *self._queue]:
                if done.done():
                    continue
                if isinstance(exc, Exception):
                    done.set_exception(exc)
                else:
                    done.cancel()
            self._queue.clear()
            raise
        finally:
            self._running = None

    async def _apply(self, batch: list[tuple[NoteWrite, asyncio.Future[Applied]]]) -> None:
        """One batch: drop what was answered before, apply the rest, resolve every future."""
        fresh = await asyncio.to_thread(self.store.never_written, [w.path for w, _ in batch])
        asked = [write for (write, _), new in zip(batch, fresh, strict=True) if not new]
        answers = iter(
            await asyncio.gather(
                *(self.results.get(subjects.knowledge_result_key(w.write_id)) for w in asked),
                return_exceptions=True,
            )
        )
        todo: list[tuple[NoteWrite, asyncio.Future[Applied]]] = []
        for (write, done), new in zip(batch, fresh, strict=True):
            entry = None if new else next(answers)
            if entry is None or isinstance(entry, KeyNotFoundError):
                todo.append((write, done))
            elif isinstance(entry, BaseException):
                _settle(done, entry)
            else:
                answered = NoteWriteResult.model_validate_json(entry.value or b"{}")
                _settle(done, Applied(answered, stored_before=True))
        if not todo:
            return
        try:
            results = await asyncio.to_thread(self.store.apply_many, [w for w, _ in todo])
        except Exception as exc:  # noqa: BLE001 - the batch could not be made durable: all fail
            for _, done in todo:
                _settle(done, exc)
            return
        for (_, done), outcome in zip(todo, results, strict=True):
            if isinstance(outcome, KnowledgeError):
                _settle(done, outcome)
            else:
                _settle(done, Applied(outcome, stored_before=False))


def _settle(done: asyncio.Future[Applied], outcome: Applied | BaseException) -> None:
    """Resolve a future unless its handler gave up on it (cancelled)."""
    if done.done():
        return
    if isinstance(outcome, BaseException):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)
