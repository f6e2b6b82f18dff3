"""A batch of commits: each write its own commit, the whole batch made durable at once.

    begin    HEAD's commit is the base; nothing is written yet
    commit   per note: a blob, the trees on its path, a commit whose parent is the previous
             one (no fsync); reads of the batch see every commit made so far
    finish   one syncfs of the repository's file system (every object durable), then HEAD
             moved once to the last commit by compare-and-set, the ref file fsynced, then the
             working-tree files written

A crash before `finish` moves HEAD leaves objects no ref points at (harmless, `git fsck
--no-dangling` is clean); HEAD never points at an object that is not on disk. A commit that
fails leaves the batch as it was before it, so the next one still builds on the last good one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pygit2

from hivebus.core import get_logger
from hivebus.knowledge.durable import fsync_file, sync_filesystem
from hivebus.knowledge.git import GitError, libgit2_errors
from hivebus.knowledge.history import LastCommit, last_commit
from hivebus.knowledge.trees import TreeEditor, blob_at
from hivebus.knowledge.worktree import write_file

__all__ = ["SERVICE_EMAIL", "SERVICE_NAME", "CommitBatch", "sanitise_identity"]

log = get_logger(__name__)

SERVICE_NAME = "hivebus-knowledge"
SERVICE_EMAIL = "knowledge@hivebus.invalid"
"""The identity of the store's own commits (the first one), and the committer of every commit."""

_UNSAFE_IN_IDENTITY = re.compile(r"[<>\x00-\x1f\x7f]+")


def sanitise_identity(value: str, fallback: str) -> str:
    """Strip angle brackets and control characters from an author name or email."""
    cleaned = " ".join(_UNSAFE_IN_IDENTITY.sub(" ", value).split())
    return cleaned or fallback


class CommitBatch:
    """Commits chained on top of HEAD, made durable and published by `finish`.

    Use it from one thread, the thread whose repository object it was given.
    """

    def __init__(self, repo: pygit2.Repository, root: Path) -> None:
        """Start a batch on top of the HEAD of `repo`, whose working tree is `root`."""
        self._repo = repo
        self._root = root
        with libgit2_errors("read HEAD"):
            head = repo.references["HEAD"]
            self._ref_name = head.target if isinstance(head.target, str) else "HEAD"
            self._ref = repo.references.get(self._ref_name)
            base = self._ref.peel(pygit2.Commit) if self._ref is not None else None
        self._base = base.id if base is not None else None
        self._tip = self._base
        self._tip_tree = base.tree_id if base is not None else None
        self._editor = TreeEditor(repo, self._tip_tree)
        self._made: list[pygit2.Oid] = []
        self._files: dict[str, bytes] = {}

    @property
    def base(self) -> str | None:
        """HEAD's commit when the batch began, None in an empty repository."""
        return str(self._base) if self._base is not None else None

    @property
    def tip(self) -> str | None:
        """The last commit of the batch (HEAD's commit before any), None in an empty repository."""
        return str(self._tip) if self._tip is not None else None

    @property
    def written(self) -> dict[str, str]:
        """The text of every file the batch writes (the last one at each path), by path."""
        return {path: data.decode("utf-8") for path, data in self._files.items()}

    @property
    def commits(self) -> int:
        """How many commits the batch made so far."""
        return len(self._made)

    def blob_revision(self, path: str, commit: str | None = None) -> str | None:
        """The blob id of `path` at the batch's last commit (or at `commit`), None when absent."""
        with libgit2_errors("read", path):
            if commit is None:
                blob = self._editor.blob(path)
            else:
                blob = blob_at(self._repo[commit].peel(pygit2.Commit).tree, path)
        return str(blob.id) if blob is not None else None

    def show(self, path: str) -> str | None:
        """The note at `path` at the batch's last commit, None when absent."""
        with libgit2_errors("read", path):
            blob = self._editor.blob(path)
            data = self._repo[blob.id].peel(pygit2.Blob).data if blob is not None else None
        return data.decode("utf-8", "replace") if data is not None else None

    def last_commit(self, path: str) -> LastCommit | None:
        """The newest commit of the batch or before it that touched `path`."""
        with libgit2_errors("log", path):
            return last_commit(self._repo, self._tip, path)

    def commit(
        self, path: str, content: str, *, author_name: str, author_email: str, message: str
    ) -> tuple[str, str]:
        """Commit `content` at `path` on top of the batch; return (commit id, blob revision).

        When `content` equals what the batch holds at `path` no commit is made and the last
        commit and the existing blob are returned. `path` must already be validated. Raises
        `GitError` (not retryable) when libgit2 refuses; the batch is then as it was.
        """
        data = content.encode("utf-8")
        blob = pygit2.hash(data)
        try:
            with libgit2_errors("commit", path):
                current = self._editor.blob(path)
                if current is not None and current.id == blob and self._tip is not None:
                    self._files[path] = data  # an interrupted later write may have left other bytes
                    return str(self._tip), str(blob)
                self._repo.create_blob(data)
                tree = self._editor.put(path, blob)
                name = sanitise_identity(author_name, "unknown agent")
                email = sanitise_identity(author_email, "unknown@hivebus.invalid").replace(" ", "")
                commit = self._repo.create_commit(
                    None,
                    pygit2.Signature(name, email),
                    pygit2.Signature(SERVICE_NAME, SERVICE_EMAIL),
                    message if message.strip() else f"Update {path}",
                    tree,
                    [self._tip] if self._tip is not None else [],
                )
        except GitError:
            self._editor.reset(self._tip_tree)
            raise
        self._tip, self._tip_tree = commit, tree
        self._made.append(commit)
        self._files[path] = data
        return str(commit), str(blob)

    def finish(self) -> None:
        """Make the batch's commits durable, move HEAD to the last one, write the files.

        Raises a retryable `GitError` when the objects or HEAD cannot be made durable, or HEAD
        was moved by someone else since `begin`: then none of the batch's commits is on HEAD
        (or whether it is on disk is not known), so none may be reported as made.
        """
        if self._made:
            self._publish()
        checked: set[Path] = set()
        for path, data in self._files.items():
            try:
                write_file(self._root, path, data, checked)
            except OSError as exc:  # committed all the same; the next start-up restores it
                log.warning("working_tree_write_failed", path=path, error=str(exc))

    def _publish(self) -> None:
        """syncfs, compare-and-set HEAD, fsync the ref."""
        git_dir = Path(self._repo.path)
        with libgit2_errors("syncfs", str(git_dir), retryable=True):
            sync_filesystem(git_dir)
        tip = self._tip
        assert tip is not None  # noqa: S101 - a batch with a commit has a tip
        message = f"hivebus: {len(self._made)} commit(s)"
        with libgit2_errors("update-ref", self._ref_name, retryable=True):
            if self._ref is None:  # the first commit of the repository: the ref must not exist
                self._repo.create_reference_direct(self._ref_name, tip, False, message)  # noqa: FBT003
            else:  # compare-and-set: refused if the ref moved since it was read in `begin`
                self._ref.set_target(tip, message)
            fsync_file(git_dir / self._ref_name)
