"""The FTS5 search index kept by the writer, over a real temporary repository."""

from __future__ import annotations

from pathlib import Path

from hivebus.contracts.knowledge import NoteWrite
from hivebus.knowledge.search_index import INDEX_FILE
from hivebus.knowledge.store import KnowledgeStore


def _write(path: str, body: str) -> NoteWrite:
    return NoteWrite(task_id="t-1", role="researcher", run_id="r1", path=path, body=body)


def _paths(store: KnowledgeStore, query: str) -> list[str]:
    return [hit.path for hit in store.search(query).hits]


def test_a_batch_is_searchable_once_applied_and_replaced_words_are_gone(tmp_path: Path) -> None:
    """Notes of a batch are found right after it; a note rewritten loses its old words."""
    store = KnowledgeStore(tmp_path / "kb")
    store.apply_many([_write("shared/a.md", "zeppelins fly"), _write("shared/b.md", "boats")])
    assert _paths(store, "zeppelins") == ["shared/a.md"]
    store.apply_many([_write("shared/a.md", "balloons float")])
    assert _paths(store, "zeppelins") == []
    assert _paths(store, "balloons") == ["shared/a.md"]
    assert store.index.indexed_commit() == store.repo.head_commit()


def test_search_needs_no_working_tree_file(tmp_path: Path) -> None:
    """Search reads the index, so a note whose file is gone from the working tree is found."""
    store = KnowledgeStore(tmp_path / "kb")
    store.apply(_write("tasks/t-1/summary.md", "the quarterly summary"))
    (tmp_path / "kb/tasks/t-1/summary.md").unlink()
    assert _paths(store, "quarterly") == ["tasks/t-1/summary.md"]


def test_an_index_behind_head_catches_up_at_start(tmp_path: Path) -> None:
    """Commits the index never saw (made by another writer) are indexed when the store opens."""
    root = tmp_path / "kb"
    KnowledgeStore(root).apply(_write("shared/a.md", "apples"))
    KnowledgeStore(root).repo.write_and_commit(
        "shared/b.md", "# Bananas\n", author_name="p", author_email="p@x", message="b"
    )
    reopened = KnowledgeStore(root)
    assert _paths(reopened, "bananas") == ["shared/b.md"]
    assert _paths(reopened, "apples") == ["shared/a.md"]


def test_a_lost_or_broken_index_is_built_again(tmp_path: Path) -> None:
    """Without its index file, or with garbage in it, the store rebuilds it from HEAD."""
    root = tmp_path / "kb"
    KnowledgeStore(root).apply(_write("shared/a.md", "apples"))
    index = root / ".git" / INDEX_FILE
    index.unlink()
    assert _paths(KnowledgeStore(root), "apples") == ["shared/a.md"]
    for leftover in root.joinpath(".git").glob(f"{INDEX_FILE}*"):
        leftover.unlink()
    index.write_bytes(b"this is not an sqlite database" * 100)
    assert _paths(KnowledgeStore(root), "apples") == ["shared/a.md"]
