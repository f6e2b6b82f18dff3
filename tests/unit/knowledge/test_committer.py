"""GroupCommitter: which writes have their earlier result looked up, over a real repository.

The results bucket is a dictionary here: what is tested is which results the committer asks
for and what it does with the answer (the real bucket is in tests/e2e/test_knowledge_*).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from hivebus.contracts import subjects
from hivebus.contracts.knowledge import NoteWrite, NoteWriteResult
from hivebus.knowledge.committer import Applied, GroupCommitter
from hivebus.knowledge.notes import MAX_NOTE_BYTES
from hivebus.knowledge.store import KnowledgeStore


@dataclass
class Entry:
    """What a KV get returns, as far as the committer reads it."""

    value: bytes


class Results:
    """Stored results by key; remembers every key asked for."""

    def __init__(self) -> None:
        """Nothing stored, nothing asked."""
        self.stored: dict[str, bytes] = {}
        self.asked: list[str] = []

    async def get(self, key: str) -> Entry:
        """The stored result, or `KeyNotFoundError` as the bucket raises it."""
        self.asked.append(key)
        if key not in self.stored:
            raise KeyNotFoundError
        return Entry(self.stored[key])

    def store(self, result: NoteWriteResult) -> None:
        """Keep `result` as the service does after announcing it."""
        self.stored[subjects.knowledge_result_key(result.write_id)] = (
            result.model_dump_json().encode()
        )


def _write(write_id: str, path: str, body: str = "text", **extra: Any) -> NoteWrite:
    return NoteWrite(
        write_id=write_id, task_id="t-1", role="researcher", path=path, body=body, **extra
    )


@pytest.fixture
def store(tmp_path: Path) -> KnowledgeStore:
    """A fresh store in a temporary directory."""
    return KnowledgeStore(tmp_path / "kb")


@pytest.fixture
def results() -> Results:
    """An empty results bucket."""
    return Results()


async def _batch(committer: GroupCommitter, *writes: NoteWrite) -> list[Applied]:
    """Submit every write before the committer runs: they go in one batch."""
    return list(await asyncio.gather(*(committer.submit(w) for w in writes)))


def _committer(store: KnowledgeStore, results: Results) -> GroupCommitter:
    return GroupCommitter(store, cast("KeyValue", results), 64)


def _key(write_id: str) -> str:
    return subjects.knowledge_result_key(write_id)


async def test_writes_to_notes_never_written_are_applied_without_a_lookup(
    store: KnowledgeStore, results: Results
) -> None:
    """Nothing can be stored for a note nobody wrote: every summary note's case."""
    applied = await _batch(
        _committer(store, results),
        _write("w-1", "shared/a.md"),
        _write("w-2", "shared/b.md"),
        _write("w-3", "tasks/ab/t-1/summary.md"),
    )
    assert [a.result.status for a in applied] == ["committed"] * 3
    assert not any(a.stored_before for a in applied)
    assert results.asked == []


async def test_a_write_to_a_note_that_exists_is_answered_from_its_stored_result(
    store: KnowledgeStore, results: Results
) -> None:
    """A redelivery after its result was stored: answered, not committed again."""
    committer = _committer(store, results)
    [first] = await _batch(committer, _write("w-1", "shared/a.md"))
    results.store(first.result)
    head = store.repo.head_commit()
    [again] = await _batch(committer, _write("w-1", "shared/a.md"))
    assert results.asked == [_key("w-1")]
    assert again.stored_before
    assert again.result == first.result
    assert store.repo.head_commit() == head  # nothing committed again


async def test_an_update_of_a_note_that_exists_is_looked_up_then_applied(
    store: KnowledgeStore, results: Results
) -> None:
    """A new write to a note that exists: looked up, found nothing, applied."""
    committer = _committer(store, results)
    await _batch(committer, _write("w-1", "shared/a.md"))
    [update] = await _batch(committer, _write("w-2", "shared/a.md", body="more"))
    assert results.asked == [_key("w-2")]
    assert update.result.status == "committed"
    assert not update.stored_before


async def test_the_later_writes_of_a_batch_to_one_new_note_are_looked_up(
    store: KnowledgeStore, results: Results
) -> None:
    """The first write of a batch makes the note; the next one could have met it before."""
    applied = await _batch(
        _committer(store, results),
        _write("w-1", "shared/a.md"),
        _write("w-2", "shared/a.md", body="second"),
        _write("w-3", "shared/b.md"),
    )
    assert results.asked == [_key("w-2")]
    assert [a.result.status for a in applied] == ["committed"] * 3


async def test_a_write_answered_without_a_commit_gets_the_same_answer_again(
    store: KnowledgeStore, results: Results
) -> None:
    """Redelivered after its result was stored, it meets the same absent note."""
    committer = _committer(store, results)
    writes = [
        _write("w-1", "shared/a.md", expected_revision="0" * 40),
        _write("w-2", "shared/b.md", body="é" * (MAX_NOTE_BYTES // 2 + 1)),
    ]
    head = store.repo.head_commit()
    first = await _batch(committer, *writes)
    for applied in first:
        results.store(applied.result)
    again = await _batch(committer, *writes)
    assert [a.result.status for a in first] == ["conflict", "invalid"]
    assert [a.result for a in again] == [a.result for a in first]
    assert results.asked == []
    assert store.repo.head_commit() == head


async def test_a_write_to_an_invalid_path_is_looked_up(
    store: KnowledgeStore, results: Results
) -> None:
    """Only valid paths are known to be absent."""
    [applied] = await _batch(_committer(store, results), _write("w-1", "Shared/../a.md"))
    assert results.asked == [_key("w-1")]
    assert applied.result.status == "invalid"


def test_never_written_reads_head_once_for_the_whole_batch(store: KnowledgeStore) -> None:
    """A folder counts as something there; a repeated path is not new the second time."""
    store.apply(_write("w-1", "shared/a.md"))
    paths = ["shared/a.md", "shared/b.md", "shared/b.md", "shared", "no/../good.md"]
    assert store.never_written(paths) == [False, True, False, False, False]
