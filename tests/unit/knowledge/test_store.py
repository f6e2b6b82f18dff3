"""The knowledge store over a real temporary Git repository: writes, conflicts, reads, search."""

from __future__ import annotations

from pathlib import Path

from hivebus.contracts.knowledge import NoteWrite
from hivebus.knowledge.store import NEW, KnowledgeStore


def _write(path: str, body: str, expected: str | None = None, run: str = "r1") -> NoteWrite:
    return NoteWrite(
        task_id="t-1",
        subtask_id="s-1",
        run_id=run,
        role="researcher",
        path=path,
        title="Findings",
        body=body,
        expected_revision=expected,
    )


def test_each_write_is_one_commit_by_the_agent(tmp_path: Path) -> None:
    """An accepted write is a commit whose author is the agent and whose message names the task."""
    store = KnowledgeStore(tmp_path / "kb")
    result = store.apply(_write("tasks/t-1/findings.md", "Bees like clover."))
    assert result.status == "committed"
    [entry, *_] = store.repo.log("tasks/t-1/findings.md")
    assert entry.author.startswith("researcher/r1")
    assert entry.subject.startswith("t-1/s-1: write tasks/t-1/findings.md")
    read = store.read("tasks/t-1/findings.md")
    assert read.found
    assert read.revision == result.revision
    assert "Bees like clover." in (read.content or "")
    assert "author: researcher/r1" in (read.content or "")


def test_a_stale_revision_is_a_conflict_with_the_current_content(tmp_path: Path) -> None:
    """Two writers from one revision: the second is refused with what is there now."""
    store = KnowledgeStore(tmp_path / "kb")
    base = store.apply(_write("shared/plan.md", "v0")).revision
    first = store.apply(_write("shared/plan.md", "v1 from a", expected=base, run="a"))
    second = store.apply(_write("shared/plan.md", "v1 from b", expected=base, run="b"))
    assert first.status == "committed"
    assert second.status == "conflict"
    assert second.current_revision == first.revision
    assert "v1 from a" in (second.current_content or "")
    merged = store.apply(
        _write("shared/plan.md", "v2 merged", expected=second.current_revision, run="b")
    )
    assert merged.status == "committed"
    assert len(store.repo.log("shared/plan.md")) == 3  # v0, v1 from a, the merge
    assert store.repo.fsck()


def test_new_means_the_note_must_not_exist(tmp_path: Path) -> None:
    """`expected_revision: new` creates a note once and refuses to replace it."""
    store = KnowledgeStore(tmp_path / "kb")
    assert store.apply(_write("shared/a.md", "x", expected=NEW)).status == "committed"
    assert store.apply(_write("shared/a.md", "y", expected=NEW)).status == "conflict"


def test_bad_paths_are_refused_with_a_reason(tmp_path: Path) -> None:
    """A write to a hostile path is `invalid` with a reason, and nothing is committed."""
    store = KnowledgeStore(tmp_path / "kb")
    before = len(store.repo.log())
    for path in ("../escape.md", "/etc/passwd.md", "--help.md", ".git/config.md", "A.md"):
        result = store.apply(_write(path, "x"))
        assert result.status == "invalid", path
        assert result.error
    assert len(store.repo.log()) == before
    assert not (tmp_path / "escape.md").exists()


def test_list_and_search_find_what_was_written(tmp_path: Path) -> None:
    """Listing shows the notes of a folder; search ranks the note about the query first."""
    store = KnowledgeStore(tmp_path / "kb")
    store.apply(_write("tasks/t-1/bees.md", "Bees visit clover; clover feeds bees."))
    store.apply(_write("tasks/t-1/ants.md", "Ants farm aphids."))
    assert store.list("tasks/t-1").paths == ["tasks/t-1/ants.md", "tasks/t-1/bees.md"]
    hits = store.search("clover").hits
    assert hits[0].path == "tasks/t-1/bees.md"
    assert "clover" in hits[0].snippet.lower()


def test_reopening_after_a_crash_keeps_every_commit(tmp_path: Path) -> None:
    """A store reopened over a repository with a stale lock repairs it and keeps its history."""
    store = KnowledgeStore(tmp_path / "kb")
    store.apply(_write("shared/a.md", "one"))
    (tmp_path / "kb" / ".git" / "index.lock").write_text("", encoding="utf-8")
    reopened = KnowledgeStore(tmp_path / "kb")
    assert reopened.apply(_write("shared/a.md", "two")).status == "committed"
    assert reopened.repo.fsck()
    assert len(reopened.repo.log("shared/a.md")) == 2


def test_a_write_replayed_after_its_commit_is_committed_once_and_says_so(
    tmp_path: Path,
) -> None:
    """The same write again (redelivered after a crash) makes no commit and answers `committed`.

    It names the commit it made the first time, so the service can announce it.
    """
    store = KnowledgeStore(tmp_path / "kb")
    write = _write("shared/a.md", "exactly this")
    first = store.apply(write)
    again = store.apply(write)
    assert first.status == "committed"
    assert again.model_dump() == first.model_dump()
    assert len(store.repo.log("shared/a.md")) == 1


def test_a_replayed_write_that_expected_the_old_revision_is_not_a_conflict(
    tmp_path: Path,
) -> None:
    """A redelivered write naming the revision it replaced is its own commit, not a conflict."""
    store = KnowledgeStore(tmp_path / "kb")
    base = store.apply(_write("shared/a.md", "v0")).revision
    write = _write("shared/a.md", "v1", expected=base)
    first = store.apply(write)
    again = store.apply(write)
    assert first.status == "committed"
    assert again.status == "committed"
    assert again.commit == first.commit
    assert len(store.repo.log("shared/a.md")) == 2


def test_another_write_of_the_same_body_by_the_same_author_is_unchanged(tmp_path: Path) -> None:
    """A different write saying what the note already says (same author) makes no commit."""
    store = KnowledgeStore(tmp_path / "kb")
    first = store.apply(_write("shared/a.md", "exactly this"))
    other = store.apply(_write("shared/a.md", "exactly this"))
    assert other.status == "unchanged"
    assert other.revision == first.revision
    assert other.commit is None
    assert len(store.repo.log("shared/a.md")) == 1


def test_a_write_through_a_symlinked_folder_is_invalid(tmp_path: Path) -> None:
    """A folder in the repository that is a symbolic link is refused: nothing lands outside."""
    store = KnowledgeStore(tmp_path / "kb")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "kb" / "tasks").mkdir()
    (tmp_path / "kb" / "tasks" / "linked").symlink_to(outside, target_is_directory=True)
    before = len(store.repo.log())
    result = store.apply(_write("tasks/linked/escape.md", "leaked"))
    assert result.status == "invalid"
    assert "symbolic link" in (result.error or "")
    assert list(outside.iterdir()) == []
    assert len(store.repo.log()) == before
