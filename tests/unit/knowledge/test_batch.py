"""Batches of commits and recovery, against a real repository in a temporary directory."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from hivebus.knowledge.repo import GitError, GitRepo, NoteChange


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    """A fresh, initialised store in a temporary directory."""
    store = GitRepo(tmp_path / "kb")
    store.init()
    return store


def change(path: str, content: str, author: str = "writer/run-1") -> NoteChange:
    """One file to commit, by `author`."""
    return NoteChange(path, content, author, "writer@agents.hivebus", f"write {path}")


def git(repo: GitRepo, *args: str) -> str:
    """The output of a git command run by the test itself in the repository."""
    done = subprocess.run(
        ["git", *args],  # noqa: S607 - the git on PATH, a fixed argument list
        cwd=repo.root,
        capture_output=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo.root)},
    )
    return done.stdout.decode()


def test_commit_many_makes_one_commit_per_change_chained_in_order(repo: GitRepo) -> None:
    """Each change is its own commit by its own author, on top of the one before it."""
    made = repo.commit_many(
        [
            change("shared/a.md", "one\n", "a/run-1"),
            change("tasks/t1/b.md", "b\n", "b/run-2"),
            change("shared/a.md", "two\n", "c/run-3"),
        ]
    )
    entries = repo.log()
    assert [e.commit for e in entries[:3]] == [made[2][0], made[1][0], made[0][0]]
    assert [e.author for e in entries[:3]] == ["c/run-3", "b/run-2", "a/run-1"]
    assert git(repo, "rev-list", "--parents", "-n", "1", made[2][0]).split() == [
        made[2][0],
        made[1][0],
    ]
    assert repo.show("shared/a.md") == "two\n"
    assert repo.show("shared/a.md", made[0][0]) == "one\n"
    assert (repo.root / "shared/a.md").read_text(encoding="utf-8") == "two\n"
    assert (repo.root / "tasks/t1/b.md").read_text(encoding="utf-8") == "b\n"
    assert repo.fsck()


def test_a_batch_sees_its_own_commits_and_head_only_after_finish(repo: GitRepo) -> None:
    """Reads of a batch see its earlier commits; HEAD and the files show them after finish."""
    batch = repo.begin()
    commit, revision = batch.commit(
        "shared/a.md", "a\n", author_name="w", author_email="w@x", message="s\n\nwrite-id: w1\n"
    )
    assert batch.blob_revision("shared/a.md") == revision
    assert batch.show("shared/a.md") == "a\n"
    last = batch.last_commit("shared/a.md")
    assert last is not None
    assert last.commit == commit
    assert repo.blob_revision("shared/a.md") is None
    assert not (repo.root / "shared/a.md").exists()
    batch.finish()
    assert repo.blob_revision("shared/a.md") == revision
    assert repo.log()[0].commit == commit
    assert (repo.root / "shared/a.md").read_text(encoding="utf-8") == "a\n"


def test_head_moves_once_per_batch(repo: GitRepo) -> None:
    """A batch of three commits is one move of HEAD (one reflog entry)."""
    before = git(repo, "reflog", "--format=%gs").splitlines()
    repo.commit_many([change(f"shared/n{i}.md", f"{i}\n") for i in range(3)])
    after = git(repo, "reflog", "--format=%gs").splitlines()
    assert after[1:] == before
    assert after[0] == "hivebus: 3 commit(s)"


def test_content_equal_to_the_batch_makes_no_commit(repo: GitRepo) -> None:
    """Writing what the batch already holds (also from an earlier change of it) commits nothing."""
    made = repo.commit_many([change("shared/a.md", "same\n"), change("shared/a.md", "same\n")])
    assert made[0] == made[1]
    assert len(repo.log()) == 2


def test_head_moved_by_someone_else_fails_the_batch_retryably(repo: GitRepo) -> None:
    """Compare-and-set: a batch whose base is no longer HEAD is refused, and HEAD is kept."""
    batch = repo.begin()
    batch.commit("shared/a.md", "mine\n", author_name="w", author_email="w@x", message="m")
    other, _ = GitRepo(repo.root).write_and_commit(
        "shared/b.md", "theirs\n", author_name="o", author_email="o@x", message="o"
    )
    with pytest.raises(GitError) as caught:
        batch.finish()
    assert caught.value.retryable
    assert repo.log()[0].commit == other
    assert repo.show("shared/a.md") is None
    assert repo.fsck()


def test_a_failed_commit_leaves_the_batch_as_it_was(repo: GitRepo) -> None:
    """A change that cannot be committed raises alone; the next one builds on the last good one."""
    repo.write_and_commit("shared/x", "a file\n", author_name="w", author_email="w@x", message="x")
    batch = repo.begin()
    with pytest.raises(GitError) as caught:  # a file where the note's folder would be
        batch.commit("shared/x/a.md", "a\n", author_name="w", author_email="w@x", message="a")
    assert not caught.value.retryable
    assert batch.commits == 0
    batch.commit("shared/b.md", "b\n", author_name="w", author_email="w@x", message="b")
    batch.finish()
    assert repo.list_files("shared") == ["shared/b.md", "shared/x"]
    assert [e.subject for e in repo.log(limit=2)] == ["b", "x"]
    assert repo.fsck()


def test_recover_restores_the_working_tree_and_resets_the_index(repo: GitRepo) -> None:
    """Files of HEAD lost or changed after their commit are rewritten; `git status` is clean."""
    repo.commit_many([change("shared/a.md", "a\n"), change("tasks/t1/b.md", "b\n")])
    (repo.root / "shared/a.md").unlink()
    (repo.root / "tasks/t1/b.md").write_text("torn", encoding="utf-8")
    repo.recover()
    assert (repo.root / "shared/a.md").read_text(encoding="utf-8") == "a\n"
    assert (repo.root / "tasks/t1/b.md").read_text(encoding="utf-8") == "b\n"
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""


def test_recover_removes_what_a_killed_libgit2_left(repo: GitRepo) -> None:
    """Stale ref locks and half-written objects are removed, and the next commit works."""
    (repo.git_dir / "refs/heads/main.lock").write_bytes(b"")
    (repo.git_dir / "objects/tmp_object_git2_a1b2c3").write_bytes(b"partial")
    (repo.git_dir / "index.lock").write_bytes(b"")
    repo.recover()
    assert not (repo.git_dir / "refs/heads/main.lock").exists()
    assert not (repo.git_dir / "objects/tmp_object_git2_a1b2c3").exists()
    repo.write_and_commit("shared/a.md", "a\n", author_name="w", author_email="w@x", message="a")
    assert repo.fsck()


def test_per_object_fsync_is_switched_off(tmp_path: Path) -> None:
    """A repository configured for an fsync per object loses that setting on init."""
    repo = GitRepo(tmp_path / "kb")
    repo.init()
    git(repo, "config", "--local", "core.fsyncObjectFiles", "true")
    GitRepo(repo.root).init()
    assert "fsyncobjectfiles" not in git(repo, "config", "--local", "--list").lower()


def test_readers_on_other_threads_see_whole_batches(repo: GitRepo) -> None:
    """While batches commit, readers on other threads see HEAD move by whole batches only."""
    batches, size = 8, 5
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                seen.append(len(repo.log(limit=1000)) - 1)
                repo.read("shared/n0-0.md")
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for b in range(batches):
            repo.commit_many([change(f"shared/n{b}-{i}.md", f"{b} {i}\n") for i in range(size)])
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert errors == []
    assert seen
    assert all(count % size == 0 for count in seen)
    assert len(repo.log(limit=1000)) - 1 == batches * size


def test_recover_never_writes_through_a_symbolic_link(repo: GitRepo, tmp_path: Path) -> None:
    """A note's folder replaced by a link to elsewhere is not restored through the link."""
    repo.commit_many([change("tasks/t1/b.md", "b\n")])
    outside = tmp_path / "outside"
    outside.mkdir()
    (repo.root / "tasks/t1/b.md").unlink()
    (repo.root / "tasks/t1").rmdir()
    (repo.root / "tasks/t1").symlink_to(outside, target_is_directory=True)
    repo.recover()
    assert list(outside.iterdir()) == []
    assert repo.show("tasks/t1/b.md") == "b\n"


def test_objects_packed_by_git_gc_while_the_store_runs_are_read_and_built_on(
    repo: GitRepo,
) -> None:
    """After a person's `git gc` moves every object into a pack, reads and commits go on.

    The store looks for new packs only when `objects/pack` changed: the gc must be seen.
    """
    first = repo.commit_many([change("shared/a.md", "one\n"), change("tasks/t1/b.md", "b\n")])
    assert repo.show("shared/a.md") == "one\n"  # the packs folder was looked at before the gc
    git(repo, "gc", "--quiet", "--prune=now")
    assert not [p for p in (repo.git_dir / "objects").glob("??") if any(p.iterdir())]
    assert repo.show("shared/a.md") == "one\n"
    assert repo.show("shared/a.md", first[0][0]) == "one\n"
    assert repo.show("tasks/t1/b.md") == "b\n"
    repo.commit_many([change("shared/a.md", "two\n")])
    assert repo.show("shared/a.md") == "two\n"
    assert repo.list_files("shared") == ["shared/a.md"]
    assert repo.fsck()


def test_a_commit_writes_few_files_for_its_objects(repo: GitRepo) -> None:
    """A note's commit writes one loose object per blob, tree and commit, and nothing else."""
    objects = repo.git_dir / "objects"
    before = {p for p in objects.rglob("*") if p.is_file()}
    repo.commit_many([change("tasks/aa/t1/summary.md", "s\n")])
    made = {p for p in objects.rglob("*") if p.is_file()} - before
    assert len(made) == 6  # the blob, four trees (t1, aa, tasks, the root), the commit
    assert repo.fsck()
