"""GitRepo: the knowledge store's Git layer, against a real repository in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from hivebus.knowledge.repo import SERVICE_NAME, GitError, GitRepo


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    """A fresh, initialised store in a temporary directory."""
    store = GitRepo(tmp_path / "kb")
    store.init()
    return store


def write(repo: GitRepo, path: str, content: str, author: str = "writer/run-1") -> tuple[str, str]:
    """Write one note as an agent, with a message naming task and sub-task."""
    return repo.write_and_commit(
        path,
        content,
        author_name=author,
        author_email="writer@agents.hivebus",
        message=f"task t1 / sub-task s1: write {path}",
    )


def test_init_is_idempotent(repo: GitRepo) -> None:
    """Initialising an existing store again adds no commit and keeps it consistent."""
    repo.init()
    GitRepo(repo.root).init()
    entries = repo.log()
    assert len(entries) == 1
    assert entries[0].author == SERVICE_NAME
    assert repo.list_files() == ["readme.md"]
    assert repo.fsck()


def test_write_makes_one_commit_with_author_and_message(repo: GitRepo) -> None:
    """A write is one commit by the agent, and returns the blob revision HEAD now holds."""
    commit, revision = write(repo, "tasks/t1/plan.md", "# Plan\n")
    entries = repo.log()
    assert len(entries) == 2
    assert entries[0].commit == commit
    assert entries[0].author == "writer/run-1"
    assert entries[0].author_email == "writer@agents.hivebus"
    assert entries[0].subject == "task t1 / sub-task s1: write tasks/t1/plan.md"
    assert "T" in entries[0].date
    assert revision == repo.blob_revision("tasks/t1/plan.md")
    assert repo.show("tasks/t1/plan.md") == "# Plan\n"


def test_each_changed_write_is_its_own_commit(repo: GitRepo) -> None:
    """Two different contents give two commits and two revisions."""
    first = write(repo, "shared/a.md", "one\n")
    second = write(repo, "shared/a.md", "two\n")
    assert first[0] != second[0]
    assert first[1] != second[1]
    assert len(repo.log("shared/a.md")) == 2


def test_replaying_a_write_makes_no_commit(repo: GitRepo) -> None:
    """Writing the content HEAD already holds returns the same ids and commits nothing."""
    first = write(repo, "shared/a.md", "same\n")
    assert write(repo, "shared/a.md", "same\n") == first
    assert len(repo.log()) == 2


def test_log_show_and_list_accept_a_path_filter(repo: GitRepo) -> None:
    """Log, show and list narrow to one note or folder, and show reads older commits."""
    old_commit, _ = write(repo, "tasks/t1/a.md", "old\n")
    write(repo, "tasks/t1/a.md", "new\n")
    write(repo, "shared/b.md", "b\n")
    assert [e.subject for e in repo.log("tasks/t1/a.md")] == [
        "task t1 / sub-task s1: write tasks/t1/a.md"
    ] * 2
    assert len(repo.log(limit=2)) == 2
    assert repo.show("tasks/t1/a.md") == "new\n"
    assert repo.show("tasks/t1/a.md", old_commit) == "old\n"
    assert repo.show("shared/b.md", old_commit) is None
    assert repo.show("tasks/t1") is None
    assert repo.list_files("tasks") == ["tasks/t1/a.md"]
    assert sorted(repo.list_files()) == ["readme.md", "shared/b.md", "tasks/t1/a.md"]


def test_recover_after_a_simulated_crash(repo: GitRepo) -> None:
    """A stale index lock and a staged, uncommitted write are undone and the store works."""
    _, revision = write(repo, "shared/a.md", "committed\n")
    (repo.root / "shared/a.md").write_text("half-done\n", encoding="utf-8")
    repo._run("add", "--", "shared/a.md")
    (repo.git_dir / "index.lock").write_bytes(b"")
    (repo.root / "shared/.a.md.123.hivebus-tmp").write_text("partial", encoding="utf-8")
    repo.recover()
    assert not (repo.git_dir / "index.lock").exists()
    assert not (repo.root / "shared/.a.md.123.hivebus-tmp").exists()
    assert repo._run("diff", "--cached", "--quiet").returncode == 0
    assert repo.fsck()
    assert repo.blob_revision("shared/a.md") == revision
    commit, replayed = write(repo, "shared/a.md", "half-done\n")
    assert repo.log()[0].commit == commit
    assert replayed == repo.blob_revision("shared/a.md")
    assert repo.fsck()


def test_replay_after_crash_restores_the_working_tree(repo: GitRepo) -> None:
    """Replaying the committed content overwrites bytes an interrupted later write left."""
    first = write(repo, "shared/a.md", "kept\n")
    (repo.root / "shared/a.md").write_text("interrupted\n", encoding="utf-8")
    repo.recover()
    assert write(repo, "shared/a.md", "kept\n") == first
    assert (repo.root / "shared/a.md").read_text(encoding="utf-8") == "kept\n"


@pytest.mark.parametrize("name", ["--help.md", "--output=leak.md", "-p", "--all", "--format=%H"])
def test_option_like_names_are_treated_as_paths(repo: GitRepo, name: str) -> None:
    """Names that look like options reach git only as paths or revisions, and match nothing."""
    assert repo.show(name) is None
    assert repo.show("readme.md", name) is None
    assert repo.blob_revision(name) is None
    assert repo.log(name) == []
    assert repo.list_files(name) == []
    assert not (repo.root / "leak.md").exists()
    assert len(repo.log()) == 1


def test_author_name_and_email_are_sanitised(repo: GitRepo) -> None:
    """Newlines and angle brackets cannot forge an author or a header in the commit."""
    repo.write_and_commit(
        "shared/a.md",
        "x\n",
        author_name="eve\ncommitter Mallory <m@x>",
        author_email="<eve@x>\nfoo",
        message="m",
    )
    entry = repo.log()[0]
    assert entry.author == "eve committer Mallory m@x"
    assert entry.author_email == "eve@xfoo"
    assert repo.fsck()


def test_git_errors_carry_the_command_and_stderr(repo: GitRepo) -> None:
    """A failing call raises GitError with the argument list and git's message, not a bare one."""
    with pytest.raises(GitError) as caught:
        repo._run("no-such-command")
    assert caught.value.command == ["git", "no-such-command"]
    assert "no-such-command" in caught.value.stderr
    assert not caught.value.retryable


def test_a_store_inside_another_repository_stays_separate(tmp_path: Path) -> None:
    """A store nested in a parent repository is its own repository, never the parent's."""
    parent = GitRepo(tmp_path)
    parent.init()
    child = GitRepo(tmp_path / "kb")
    child.init()
    write(child, "shared/a.md", "a\n")
    assert parent.list_files() == ["readme.md"]
    assert len(child.log()) == 2


def test_a_timeout_is_a_retryable_git_error(repo: GitRepo) -> None:
    """A git call (fsck) that outlives its bound is killed and reported as a retryable GitError."""
    repo.timeout_s = 0.0
    with pytest.raises(GitError) as caught:
        repo.fsck()
    assert caught.value.retryable


def test_last_commit_of_a_note_carries_its_whole_message(repo: GitRepo) -> None:
    """The newest commit touching a note comes back with its full message; none for a new path."""
    first, _ = repo.write_and_commit(
        "shared/a.md", "a\n", author_name="w", author_email="w@x", message="s\n\nwrite-id: w1\n"
    )
    write(repo, "shared/b.md", "b\n")
    last = repo.last_commit("shared/a.md")
    assert last is not None
    assert last.commit == first
    assert last.message.rstrip("\n") == "s\n\nwrite-id: w1"
    assert repo.last_commit("shared/never.md") is None
    assert repo.last_commit("--all") is None
