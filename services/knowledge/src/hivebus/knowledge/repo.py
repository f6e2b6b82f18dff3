"""The Git layer of the knowledge store: one repository, driven through the `git` binary.

`GitRepo` is used by the single writer of the store from one worker thread. Every call goes
through `hivebus.knowledge.git.run_git` (an argument list, never a shell string, a scrubbed
environment, a bounded timeout). Revisions follow `--end-of-options` and paths follow `--` (and
pathspecs are literal), so no string from a model can reach an option position. Failures
raise `GitError`, which carries the command and git's stderr.

A little over 300 lines: every git call the store makes is here, so what reaches git can be
checked in one file.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hivebus.knowledge.git import GitError, find_git, git_environment, run_git

__all__ = ["GitError", "GitRepo", "LastCommit", "LogEntry"]

DEFAULT_TIMEOUT_S = 30.0
"""How long one git call may run before it is killed."""

MAX_LOG_ENTRIES = 1000
"""Upper bound on the entries one `log` call returns."""

SERVICE_NAME = "hivebus-knowledge"
SERVICE_EMAIL = "knowledge@hivebus.invalid"
TEMP_SUFFIX = ".hivebus-tmp"
"""Suffix of the temporary files of atomic writes; any left at start-up are removed."""

README_NOTE = """---
title: Knowledge store
tags: [readme]
---

# Knowledge store

Markdown notes shared by hivebus agents. One service writes them; every write is a commit
whose author is the agent. Task notes live under `tasks/`, shared notes under `shared/`.
"""

_REVISION = re.compile(r"HEAD|[0-9a-f]{4,64}")
_UNSAFE_IN_IDENTITY = re.compile(r"[<>\x00-\x1f\x7f]+")
_FIELDS_PER_ENTRY = 5
_LS_TREE_FIELDS = 3  # mode, type, object id (then a tab and the path)
_FSYNC_CONFIG_SINCE = (2, 36)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One commit in the history of the store or of one note."""

    commit: str
    """Full commit id."""
    author: str
    """Author name (the agent that wrote)."""
    author_email: str
    """Author email."""
    date: str
    """Author date, strict ISO 8601."""
    subject: str
    """First line of the commit message."""


@dataclass(frozen=True, slots=True)
class LastCommit:
    """The newest commit that touched one note."""

    commit: str
    """Full commit id."""
    message: str
    """The whole commit message (subject, blank line, body)."""


def sanitise_identity(value: str, fallback: str) -> str:
    """Strip angle brackets and control characters from an author name or email."""
    cleaned = " ".join(_UNSAFE_IN_IDENTITY.sub(" ", value).split())
    return cleaned or fallback


class GitRepo:
    """A Git repository of notes at `root`, written by this process alone."""

    def __init__(self, root: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        """Bind to `root` (created by `init`); each git call is killed after `timeout_s`."""
        self.root = root.resolve()
        self.timeout_s = timeout_s
        self._git = find_git()
        self._env = git_environment()
        # Never look above the root for a repository, so a parent repository is never touched.
        self._env["GIT_CEILING_DIRECTORIES"] = str(self.root.parent)

    @property
    def git_dir(self) -> Path:
        """The `.git` directory of the repository."""
        return self.root / ".git"

    def _run(
        self, *args: str, stdin: bytes | None = None, ok: frozenset[int] = frozenset({0})
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `git *args` in the root; raise `GitError` unless its exit code is in `ok`."""
        return run_git(
            self._git,
            args,
            cwd=self.root,
            env=self._env,
            timeout_s=self.timeout_s,
            stdin=stdin,
            ok=ok,
        )

    def _out(self, *args: str) -> str:
        """Run a git command and return its stdout without the trailing newline."""
        return self._run(*args).stdout.decode("utf-8", "replace").rstrip("\n")

    def _has_head(self) -> bool:
        """Whether HEAD points at a commit (False in a new, empty repository)."""
        probe = "rev-parse", "-q", "--verify", "--end-of-options", "HEAD^{commit}"
        return self._run(*probe, ok=frozenset({0, 1})).returncode == 0

    def _blob_id(self, revision: str, path: str) -> str | None:
        """The blob id of `path` in `revision`, None when absent or not a file (one git call)."""
        if not path or "\n" in path or "\x00" in path:
            return None
        listed = self._run(
            "ls-tree",
            "-z",
            "--full-tree",
            "--end-of-options",
            revision,
            "--",
            path,
            ok=frozenset({0, 128}),
        )
        if listed.returncode != 0:  # no such revision (a new, empty repository)
            return None
        for entry in listed.stdout.split(b"\x00"):
            meta, _, name = entry.partition(b"\t")
            fields = meta.split()
            if (
                name.decode("utf-8", "replace") == path
                and len(fields) == _LS_TREE_FIELDS
                and fields[1] == b"blob"
            ):
                return fields[2].decode("ascii")
        return None

    def _configure(self) -> None:
        """Set the service identity and durable writes in the repository's own config."""
        settings = [("user.name", SERVICE_NAME), ("user.email", SERVICE_EMAIL)]
        version = re.search(r"(\d+)\.(\d+)", self._out("--version"))
        if version and (int(version[1]), int(version[2])) >= _FSYNC_CONFIG_SINCE:
            settings.append(("core.fsync", "all"))
        else:
            settings.append(("core.fsyncObjectFiles", "true"))
        for key, value in settings:
            self._run("config", "--local", key, value)

    def init(self) -> None:
        """Create the repository if absent, configure it and make the first commit; idempotent."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.git_dir.is_dir():
            self._run("init", "-q", "-b", "main")
        self._configure()
        if not self._has_head():
            self.write_and_commit(
                "readme.md",
                README_NOTE,
                author_name=SERVICE_NAME,
                author_email=SERVICE_EMAIL,
                message="Start the knowledge store",
            )

    def recover(self) -> None:
        """Undo what a SIGKILL left behind: stale locks, a half-staged index, temporary files."""
        if not self.git_dir.is_dir():
            return
        # This process is the only writer, so any lock present at start-up is stale.
        locks = [self.git_dir / name for name in ("index.lock", "HEAD.lock", "config.lock")]
        locks += [self.git_dir / "packed-refs.lock", *(self.git_dir / "refs").rglob("*.lock")]
        for lock in locks:
            lock.unlink(missing_ok=True)
        for leftover in self.root.rglob(f"*{TEMP_SUFFIX}"):
            if self.git_dir not in leftover.parents:
                leftover.unlink(missing_ok=True)
        if self._has_head():
            self._run("reset", "--mixed", "-q")
        else:
            self._run("read-tree", "--empty")

    def blob_revision(self, path: str) -> str | None:
        """The blob id of `path` as committed at HEAD (the note's revision), None when absent."""
        return self._blob_id("HEAD", path)

    def _write_file(self, path: str, data: bytes) -> None:
        """Replace the working-tree file atomically and durably (temp file, fsync, rename)."""
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_SUFFIX
        )
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            Path(tmp_name).replace(target)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def write_and_commit(
        self, path: str, content: str, *, author_name: str, author_email: str, message: str
    ) -> tuple[str, str]:
        """Write `path` and commit it alone; return (commit id, blob revision).

        When `content` equals the file at HEAD no commit is made and the existing ids are
        returned, so a redelivered write is a no-op. `path` must already be validated.

        The commit is made with plumbing, never with `git add` / `git commit`, which look at
        every file of the working tree: a blob, the index entry of this one path, a tree from
        the index, a commit of that tree, and HEAD moved by compare-and-set. The cost of a
        commit therefore does not grow with the number of notes in the store.
        """
        data = content.encode("utf-8")
        wanted = self._run("hash-object", "-w", "--no-filters", "--stdin", stdin=data)
        blob = wanted.stdout.decode("ascii").strip()
        current = self.blob_revision(path)
        target = self.root / path
        parent = self._head()
        if current == blob and parent is not None:
            if not target.is_file() or target.read_bytes() != data:
                self._write_file(path, data)  # an interrupted later write left other bytes
            return parent, blob
        self._write_file(path, data)
        self._run("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}")
        tree = self._out("write-tree")
        name = sanitise_identity(author_name, "unknown agent")
        email = sanitise_identity(author_email, "unknown@hivebus.invalid").replace(" ", "")
        text = message if message.strip() else f"Update {path}"
        parents = ["-p", parent] if parent is not None else []
        made = run_git(
            self._git,
            ("commit-tree", "--no-gpg-sign", *parents, "-F", "-", tree),
            cwd=self.root,
            env={**self._env, "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email},
            timeout_s=self.timeout_s,
            stdin=text.encode("utf-8"),
        )
        commit = made.stdout.decode("ascii").strip()
        # Moves HEAD only if it is still `parent`: this process is the only writer, so a
        # refusal means the repository was changed under it, which must not pass silently.
        self._run("update-ref", "-m", f"hivebus: {path}", "HEAD", commit, parent or "")
        return commit, blob

    def _head(self) -> str | None:
        """The commit HEAD points at, None in a new, empty repository."""
        probe = self._run(
            "rev-parse",
            "-q",
            "--verify",
            "--end-of-options",
            "HEAD^{commit}",
            ok=frozenset({0, 1}),
        )
        return probe.stdout.decode("ascii").strip() if probe.returncode == 0 else None

    def log(self, path: str | None = None, limit: int = 50) -> list[LogEntry]:
        """The newest `limit` commits, of the whole store or of the note at `path`."""
        if not self._has_head():
            return []
        count = max(1, min(limit, MAX_LOG_ENTRIES))
        args = ["log", "-z", f"--max-count={count}", "--format=%H%x00%an%x00%ae%x00%aI%x00%s"]
        args += ["--end-of-options", "HEAD", "--"]
        if path is not None:
            args.append(path)
        raw = self._run(*args).stdout.decode("utf-8", "replace")
        if not raw:
            return []
        fields = raw.removesuffix("\x00").split("\x00")
        return [
            LogEntry(*fields[i : i + _FIELDS_PER_ENTRY])
            for i in range(0, len(fields) - _FIELDS_PER_ENTRY + 1, _FIELDS_PER_ENTRY)
        ]

    def last_commit(self, path: str) -> LastCommit | None:
        """The newest commit that touched `path`, with its whole message; None when none did."""
        if not self._has_head():
            return None
        args = ["log", "-1", "-z", "--format=%H%x00%B", "--end-of-options", "HEAD", "--", path]
        raw = self._run(*args).stdout.decode("utf-8", "replace")
        commit, _, message = raw.removesuffix("\x00").partition("\x00")
        return LastCommit(commit, message) if commit else None

    def show(self, path: str, revision: str | None = None) -> str | None:
        """The note at `path` at HEAD or at commit `revision`; None when either is unknown."""
        rev = revision or "HEAD"
        if not _REVISION.fullmatch(rev) or not self._has_head():
            return None
        blob = self._blob_id(rev, path)
        if blob is None:
            return None
        return self._run("cat-file", "blob", blob).stdout.decode("utf-8", "replace")

    def list_files(self, prefix: str = "") -> list[str]:
        """Paths of the tracked files, all of them or those under the directory `prefix`."""
        args = ["ls-files", "-z", "--"]
        if prefix:
            args.append(prefix)
        raw = self._run(*args).stdout.decode("utf-8", "replace")
        return [name for name in raw.split("\x00") if name]

    def fsck(self) -> bool:
        """Whether `git fsck` finds the repository consistent (dangling objects are fine)."""
        done = self._run("fsck", "--no-dangling", "--no-progress", ok=frozenset(range(256)))
        return done.returncode == 0
