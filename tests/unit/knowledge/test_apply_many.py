"""KnowledgeStore.apply_many: many writes per durable batch, over a real temporary repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from hivebus.contracts.knowledge import NoteWrite, NoteWriteResult
from hivebus.knowledge.errors import KnowledgeError
from hivebus.knowledge.git import GitError
from hivebus.knowledge.store import NEW, KnowledgeStore, write_id_of


def _write(
    path: str, body: str, expected: str | None = None, run: str = "r1", role: str = "researcher"
) -> NoteWrite:
    return NoteWrite(
        task_id="t-1",
        subtask_id="s-1",
        run_id=run,
        role=role,
        path=path,
        body=body,
        expected_revision=expected,
    )


def _ok(result: NoteWriteResult | KnowledgeError) -> NoteWriteResult:
    assert isinstance(result, NoteWriteResult), result
    return result


@pytest.fixture
def store(tmp_path: Path) -> KnowledgeStore:
    """A fresh store in a temporary directory."""
    return KnowledgeStore(tmp_path / "kb")


def test_the_writes_of_a_batch_are_commits_in_their_order(store: KnowledgeStore) -> None:
    """Five writes of one note in one batch: five commits, oldest first, the last one wins."""
    results = [_ok(r) for r in store.apply_many([_write("shared/a.md", f"v{i}") for i in range(5)])]
    assert [r.status for r in results] == ["committed"] * 5
    log = store.repo.log("shared/a.md")
    assert [e.commit for e in reversed(log)] == [r.commit for r in results]
    assert "v4" in (store.read("shared/a.md").content or "")
    assert store.read("shared/a.md").revision == results[-1].revision


def test_a_write_sees_the_earlier_writes_of_its_batch(store: KnowledgeStore) -> None:
    """Two writes from one revision in one batch: the second is a conflict with the first's."""
    base = _ok(store.apply(_write("shared/plan.md", "v0"))).revision
    first, second, third = (
        _ok(r)
        for r in store.apply_many(
            [
                _write("shared/plan.md", "v1 from a", expected=base, run="a"),
                _write("shared/plan.md", "v1 from b", expected=base, run="b"),
                _write("shared/new.md", "made", expected=NEW),
            ]
        )
    )
    assert first.status == "committed"
    assert second.status == "conflict"
    assert second.current_revision == first.revision
    assert "v1 from a" in (second.current_content or "")
    assert third.status == "committed"
    again = _ok(store.apply_many([_write("shared/new.md", "again", expected=NEW)])[0])
    assert again.status == "conflict"


def test_a_write_that_cannot_be_committed_does_not_touch_the_others(
    store: KnowledgeStore,
) -> None:
    """A failing write gets its own error and an invalid one its result; the rest commit."""
    store.repo.write_and_commit(
        "shared/x", "a file\n", author_name="p", author_email="p@x", message="x"
    )
    before = len(store.repo.log())
    results = store.apply_many(
        [
            _write("shared/one.md", "one"),
            _write("shared/x/blocked.md", "a file is where its folder would be"),
            _write("../escape.md", "no"),
            _write("shared/two.md", "two"),
        ]
    )
    assert _ok(results[0]).status == "committed"
    assert isinstance(results[1], GitError)
    assert not results[1].retryable
    assert _ok(results[2]).status == "invalid"
    assert _ok(results[3]).status == "committed"
    assert len(store.repo.log()) == before + 2
    assert store.repo.list_files("shared") == ["shared/one.md", "shared/two.md", "shared/x"]
    assert store.repo.fsck()
    with pytest.raises(GitError):
        store.apply(_write("shared/x/blocked.md", "apply raises what apply_many returns"))


def test_a_batch_applied_again_is_answered_with_its_own_commits(store: KnowledgeStore) -> None:
    """A redelivered batch makes no commit and answers each write as it was answered."""
    base = _ok(store.apply(_write("shared/a.md", "v0"))).revision
    writes = [
        _write("shared/a.md", "v1", expected=base),
        _write("shared/b.md", "b", expected=NEW),
        _write("shared/a.md", "v2"),
    ]
    first = [_ok(r).model_dump() for r in store.apply_many(writes)]
    commits = len(store.repo.log())
    again = [_ok(r).model_dump() for r in store.apply_many(writes)]
    assert again == first
    assert len(store.repo.log()) == commits


def test_a_batch_replayed_after_a_restart_is_answered_with_its_own_commits(
    tmp_path: Path,
) -> None:
    """After a restart, a redelivered write finds its commit though a later one replaced it."""
    root = tmp_path / "kb"
    writes = [_write("shared/a.md", "first"), _write("shared/a.md", "second", run="r2")]
    first = [_ok(r).model_dump() for r in KnowledgeStore(root).apply_many(writes)]
    reopened = KnowledgeStore(root)
    commits = len(reopened.repo.log())
    assert [_ok(r).model_dump() for r in reopened.apply_many(writes)] == first
    assert len(reopened.repo.log()) == commits
    assert "second" in (reopened.read("shared/a.md").content or "")


def test_each_commit_is_authored_by_its_agent_and_names_its_write(store: KnowledgeStore) -> None:
    """Every commit of a batch has its own agent as author and its write id in the message."""
    writes = [
        _write("tasks/t-1/a.md", "a", run="run-a", role="researcher"),
        _write("tasks/t-1/b.md", "b", run="run-b", role="writer"),
    ]
    store.apply_many(writes)
    for write, author in zip(writes, ["researcher/run-a", "writer/run-b"], strict=True):
        [entry] = store.repo.log(write.path)
        assert entry.author == author
        last = store.repo.last_commit(write.path)
        assert last is not None
        assert write_id_of(last.message) == write.write_id


def test_a_note_lost_from_the_working_tree_is_restored_on_reopening(tmp_path: Path) -> None:
    """A committed note whose file is gone (a crash lost it) is back once the store reopens."""
    root = tmp_path / "kb"
    store = KnowledgeStore(root)
    store.apply_many([_write("tasks/t-1/summary.md", "the summary")])
    (root / "tasks/t-1/summary.md").unlink()
    KnowledgeStore(root)
    assert "the summary" in (root / "tasks/t-1/summary.md").read_text(encoding="utf-8")
