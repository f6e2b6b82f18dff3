"""The Git layer of the knowledge store: one repository, driven in process through libgit2.

`GitRepo` reads HEAD from any thread (each thread gets its own `pygit2.Repository`: libgit2's
are not thread-safe) and commits from one writer thread at a time, in batches
(`hivebus.knowledge.batch`: objects without an fsync each, one syncfs, then HEAD moved once by
compare-and-set). Commits are made from trees, never through the index or a scan of the working
tree, so their cost does not grow with the number of notes. The index (`.git/index`) is reset
to HEAD by `recover` at start-up and not kept up to date after it: keeping it would rewrite the
whole index (every note) per batch. The `git` binary is called for `fsck` alone, through
`hivebus.knowledge.git.run_git`.

No string from a model reaches an option: libgit2 takes paths and ids as values, never as
command-line arguments, and a revision must look like one (`HEAD` or hex) before it is looked
up. Failures raise `GitError`.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pygit2
from pygit2.enums import ConfigLevel, RepositoryOpenFlag

from hivebus.core import get_logger
from hivebus.knowledge.batch import SERVICE_EMAIL, SERVICE_NAME, CommitBatch, sanitise_identity
from hivebus.knowledge.durable import sync_filesystem
from hivebus.knowledge.git import GitError, find_git, git_environment, libgit2_errors, run_git
from hivebus.knowledge.history import LastCommit, LogEntry, last_commit, log, messages
from hivebus.knowledge.trees import blob_at, entry_at, files_under, read_files
from hivebus.knowledge.worktree import TEMP_SUFFIX, remove_temp_files, restore

__all__ = [
    "SERVICE_EMAIL",
    "SERVICE_NAME",
    "TEMP_SUFFIX",
    "GitError",
    "GitRepo",
    "LastCommit",
    "LogEntry",
    "NoteChange",
    "sanitise_identity",
]

logger = get_logger(__name__)

DEFAULT_TIMEOUT_S = 30.0
"""How long one call of the `git` binary (`fsck`) may run before it is killed."""

MAX_LOG_ENTRIES = 1000
"""Upper bound on the entries one `log` call returns."""

README_NOTE = """---
title: Knowledge store
tags: [readme]
---

# Knowledge store

Markdown notes shared by hivebus agents. One service writes them; every write is a commit
whose author is the agent. Task notes live under `tasks/`, shared notes under `shared/`.
"""

_REVISION = re.compile(r"HEAD|[0-9a-f]{4,64}")
_CONFIG = {"user.name": SERVICE_NAME, "user.email": SERVICE_EMAIL}
_UNWANTED_CONFIG = ("core.fsyncObjectFiles",)  # libgit2 would fsync every object on its own


@cache
def _isolate_libgit2() -> None:
    """Make libgit2 read the repository's own config alone (no system, global or XDG file).

    And make trees and commits without checking the objects they name (see below).
    """
    for level in (ConfigLevel.SYSTEM, ConfigLevel.XDG, ConfigLevel.GLOBAL, ConfigLevel.PROGRAMDATA):
        pygit2.settings.search_path[level] = ""
    # A tree or commit is made only after what it names (`CommitBatch.commit`), so libgit2's
    # check that each named object exists (a lookup per entry) is skipped: 143 system calls
    # per batched note before this and the `_Packs` below, 80 after.
    pygit2.settings.enable_strict_object_creation(False)  # noqa: FBT003 - its API


class _Packs(pygit2.OdbBackend):
    """libgit2's pack backend, looking for new packs only when `objects/pack` changed.

    libgit2 looks for new packs whenever an object is found nowhere, and every object a commit
    writes is new: four system calls (opendir, two getdents, close) per object, six objects per
    note. This asks the folder's modification time instead (one `stat`); a pack added or removed
    (`git gc`, `git repack`) changes it.
    """

    def __init__(self, objects: Path) -> None:
        """The packs in `objects/pack`."""
        super().__init__()
        self._folder = objects / "pack"
        self._packs = pygit2.OdbBackendPack(str(objects))
        self._seen = self._stamp()

    def _stamp(self) -> int | None:
        try:
            return self._folder.stat().st_mtime_ns
        except OSError:
            return None

    # libgit2's callbacks, each handed to the pack backend.
    def read_cb(self, oid: pygit2.Oid) -> tuple[int, bytes]:
        """See `pygit2.OdbBackend.read`."""
        return self._packs.read(oid)

    def read_header_cb(self, oid: pygit2.Oid) -> tuple[int, int]:
        """See `pygit2.OdbBackend.read_header`."""
        return self._packs.read_header(oid)

    def read_prefix_cb(self, prefix: str) -> tuple[int, bytes, pygit2.Oid]:
        """See `pygit2.OdbBackend.read_prefix`."""
        return self._packs.read_prefix(prefix)

    def exists_cb(self, oid: pygit2.Oid) -> bool:
        """See `pygit2.OdbBackend.exists`."""
        return self._packs.exists(oid)

    def exists_prefix_cb(self, prefix: str) -> pygit2.Oid:
        """See `pygit2.OdbBackend.exists_prefix`."""
        return self._packs.exists_prefix(prefix)

    def refresh_cb(self) -> None:
        """Look for new packs if the folder changed since the last look."""
        stamp = self._stamp()
        if stamp != self._seen:
            self._seen = stamp
            self._packs.refresh()

    def __iter__(self) -> Iterator[pygit2.Oid]:
        """Every object id in the packs."""
        return iter(self._packs)


def _object_database(objects: Path) -> pygit2.Odb:
    """Loose objects (written without an fsync each), then the packs; no alternates.

    The loose backend comes first: libgit2 writes through the first backend that can write,
    and a Python backend always offers to. The store writes loose objects only; packs come
    from a person's `git gc`.
    """
    odb = pygit2.Odb()
    odb.add_backend(pygit2.OdbBackendLoose(str(objects), -1, False), 2)  # noqa: FBT003
    odb.add_backend(_Packs(objects), 1)
    return odb


@dataclass(frozen=True, slots=True)
class NoteChange:
    """One file to commit: its new content, the author, the message."""

    path: str
    """A validated note path."""
    content: str
    """The whole new file."""
    author_name: str
    """Commit author; sanitised before use."""
    author_email: str
    """Commit author's email; sanitised before use."""
    message: str
    """Commit message."""


class GitRepo:
    """A Git repository of notes at `root`, written by this process alone."""

    def __init__(self, root: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        """Bind to `root` (created by `init`); a call of the `git` binary ends after `timeout_s`."""
        self.root = root.resolve()
        self.timeout_s = timeout_s
        self._local = threading.local()
        _isolate_libgit2()

    @property
    def git_dir(self) -> Path:
        """The `.git` directory of the repository."""
        return self.root / ".git"

    def _repo(self) -> pygit2.Repository:
        """This thread's libgit2 repository object, opened on first use."""
        repo: pygit2.Repository | None = getattr(self._local, "repo", None)
        if repo is None:
            with libgit2_errors("open", str(self.git_dir)):
                # Opened by its `.git` with no search upwards: a parent repository is never used.
                repo = pygit2.Repository(str(self.git_dir), RepositoryOpenFlag.NO_SEARCH)
                repo.set_odb(_object_database(self.git_dir / "objects"))
            self._local.repo = repo
        return repo

    def _head(self) -> pygit2.Commit | None:
        """The commit HEAD points at, None in a new, empty repository."""
        repo = self._repo()
        with libgit2_errors("read HEAD"):
            return None if repo.head_is_unborn else repo.head.peel(pygit2.Commit)

    def _run(
        self, *args: str, ok: frozenset[int] = frozenset({0})
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `git *args` in the root; raise `GitError` unless its exit code is in `ok`."""
        env = git_environment()
        # Never look above the root for a repository, so a parent repository is never touched.
        env["GIT_CEILING_DIRECTORIES"] = str(self.root.parent)
        return run_git(find_git(), args, cwd=self.root, env=env, timeout_s=self.timeout_s, ok=ok)

    def _configure(self) -> None:
        """Set the service identity in the repository's own config; drop per-object fsync."""
        config = self._repo().config
        with libgit2_errors("config"):
            for key, value in _CONFIG.items():
                if key not in config or config[key] != value:
                    config[key] = value
            for key in _UNWANTED_CONFIG:
                if key in config:
                    del config[key]

    def init(self) -> None:
        """Create the repository if absent, configure it and make the first commit; idempotent."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.git_dir.is_dir():
            with libgit2_errors("init", str(self.root)):
                pygit2.init_repository(str(self.root), initial_head="main")
        self._configure()
        if self._head() is None:
            self.write_and_commit(
                "readme.md",
                README_NOTE,
                author_name=SERVICE_NAME,
                author_email=SERVICE_EMAIL,
                message="Start the knowledge store",
            )

    def recover(self) -> None:
        """Undo what a SIGKILL left behind and make what it wrote durable.

        Removes stale locks and temporary files, syncs the file system (a commit the killed
        writer made is on disk before a replay reports it), rewrites the working-tree files of
        HEAD that are missing or differ (they are not fsynced), and resets the index to HEAD.
        """
        if not self.git_dir.is_dir():
            return
        # This process is the only writer, so any lock present at start-up is stale.
        git = self.git_dir
        locks = [git / name for name in ("index.lock", "HEAD.lock", "config.lock")]
        locks += [git / "packed-refs.lock", *(git / "refs").rglob("*.lock")]
        locks += [*(git / "logs").rglob("*.lock"), *(git / "objects").glob("tmp_object_git2_*")]
        for lock in locks:
            lock.unlink(missing_ok=True)
        remove_temp_files(self.root, git)
        with libgit2_errors("syncfs", str(git), retryable=True):
            sync_filesystem(git)
        head = self._head()
        repo = self._repo()
        with libgit2_errors("restore the working tree and the index"):
            restored = restore(repo, self.root, head.tree) if head is not None else []
            index = repo.index
            if head is not None:
                index.read_tree(head.tree)
            else:
                index.clear()
            index.write()
        if restored:
            logger.warning("working_tree_restored", files=len(restored), first=restored[0])

    def begin(self) -> CommitBatch:
        """A batch of commits on top of HEAD; call from the thread that will `finish` it."""
        return CommitBatch(self._repo(), self.root)

    def commit_many(self, changes: Sequence[NoteChange]) -> list[tuple[str, str]]:
        """Commit each change on top of the previous one; return (commit, blob revision) each.

        All of them become durable and visible on HEAD together, once; a change equal to the
        file it replaces makes no commit (its ids are the existing ones). Raises `GitError`
        when any change fails, and then none of them is on HEAD.
        """
        batch = self.begin()
        made = [
            batch.commit(
                change.path,
                change.content,
                author_name=change.author_name,
                author_email=change.author_email,
                message=change.message,
            )
            for change in changes
        ]
        batch.finish()
        return made

    def write_and_commit(
        self, path: str, content: str, *, author_name: str, author_email: str, message: str
    ) -> tuple[str, str]:
        """Write `path` and commit it alone; return (commit id, blob revision).

        When `content` equals the file at HEAD no commit is made and the existing ids are
        returned, so a redelivered write is a no-op. `path` must already be validated.
        """
        change = NoteChange(path, content, author_name, author_email, message)
        return self.commit_many([change])[0]

    def head_commit(self) -> str | None:
        """The id of HEAD's commit, None in a new, empty repository."""
        head = self._head()
        return str(head.id) if head is not None else None

    def changed_paths(self, old: str, new: str) -> list[str] | None:
        """The files added, changed or removed from commit `old` to commit `new`.

        None when either is not a commit of this repository. Compares trees by id, so a folder
        that did not change is not read.
        """
        repo = self._repo()
        try:
            before, after = repo[old].peel(pygit2.Tree), repo[new].peel(pygit2.Tree)
        except (KeyError, ValueError, pygit2.GitError):
            return None
        with libgit2_errors("diff", old, new):
            deltas = before.diff_to_tree(after).deltas
            return sorted({path for d in deltas for path in (d.old_file.path, d.new_file.path)})

    def blob_revision(self, path: str) -> str | None:
        """The blob id of `path` as committed at HEAD (the note's revision), None when absent."""
        head = self._head()
        blob = blob_at(head.tree, path) if head is not None else None
        return str(blob.id) if blob is not None else None

    def absent(self, paths: Sequence[str]) -> list[bool]:
        """For each path, whether HEAD holds nothing at all there (one look at HEAD for all)."""
        head = self._head()
        if head is None:
            return [True] * len(paths)
        tree = head.tree
        return [entry_at(tree, path) is None for path in paths]

    def read(self, path: str) -> tuple[str, str] | None:
        """The note at `path` at HEAD as (revision, text), from one look at HEAD."""
        head = self._head()
        blob = blob_at(head.tree, path) if head is not None else None
        if blob is None:
            return None
        with libgit2_errors("read", path):
            data = self._repo()[blob.id].peel(pygit2.Blob).data
        return str(blob.id), data.decode("utf-8", "replace")

    def show(self, path: str, revision: str | None = None) -> str | None:
        """The note at `path` at HEAD or at commit `revision`; None when either is unknown."""
        rev = revision or "HEAD"
        if not _REVISION.fullmatch(rev):
            return None
        repo = self._repo()
        try:
            found = self._head() if rev == "HEAD" else repo[rev]
            tree = found.peel(pygit2.Tree) if found is not None else None
        except (KeyError, ValueError, pygit2.GitError):  # unknown, ambiguous or not a commit
            return None
        blob = blob_at(tree, path) if tree is not None else None
        if blob is None:
            return None
        with libgit2_errors("read", path):
            data = repo[blob.id].peel(pygit2.Blob).data
        return data.decode("utf-8", "replace")

    def read_files(
        self, commit: str, paths: list[str] | None = None
    ) -> list[tuple[str, str | None]]:
        """The text of each file at `paths` in `commit`, or of every file when `paths` is None.

        None stands for a path with no file; each folder is read once.
        """
        repo = self._repo()
        with libgit2_errors("read", commit):
            tree = repo[commit].peel(pygit2.Tree)
            files = read_files(repo, tree, paths)
        return [(p, d.decode("utf-8", "replace") if d is not None else None) for p, d in files]

    def log(self, path: str | None = None, limit: int = 50) -> list[LogEntry]:
        """The newest `limit` commits, of the whole store or of the note at `path`."""
        head = self._head()
        count = max(1, min(limit, MAX_LOG_ENTRIES))
        with libgit2_errors("log", path or ""):
            return log(self._repo(), head.id if head is not None else None, path, count)

    def last_commit(self, path: str) -> LastCommit | None:
        """The newest commit that touched `path`, with its whole message; None when none did."""
        head = self._head()
        with libgit2_errors("log", path):
            return last_commit(self._repo(), head.id if head is not None else None, path)

    def messages(self, limit: int) -> list[LastCommit]:
        """The newest `limit` commits of the store, each with its whole message."""
        head = self._head()
        with libgit2_errors("log"):
            return messages(self._repo(), head.id if head is not None else None, limit)

    def list_files(self, prefix: str = "") -> list[str]:
        """Paths of the files at HEAD, all of them or those under the directory `prefix`."""
        head = self._head()
        if head is None:
            return []
        with libgit2_errors("list", prefix):
            return files_under(self._repo(), head.tree, prefix)

    def fsck(self) -> bool:
        """Whether `git fsck` finds the repository consistent (dangling objects are fine)."""
        done = self._run("fsck", "--no-dangling", "--no-progress", ok=frozenset(range(256)))
        return done.returncode == 0
