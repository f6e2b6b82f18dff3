"""The history of the store or of one note, read in process by following first parents.

The store's history is linear (one writer, no merges), so the commits that touched a note are
those whose first parent held something else at the note's path. Trees already compared are
remembered by id, so a folder that did not change between two commits is not read twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pygit2

from hivebus.knowledge.trees import split_path

__all__ = ["LastCommit", "LogEntry", "last_commit", "log", "messages"]

MAX_REMEMBERED_TREES = 4096
"""Bound on the folder lookups one walk remembers; forgotten all at once when reached."""


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


def _subject(message: str) -> str:
    """The first paragraph of a message on one line, as `git log --format=%s` shows it."""
    paragraph = message.strip("\n").split("\n\n", 1)[0]
    return " ".join(line.strip() for line in paragraph.splitlines())


def _date(signature: pygit2.Signature) -> str:
    """A signature's time in strict ISO 8601 with its own offset, as `%aI` shows it."""
    zone = timezone(timedelta(minutes=signature.offset)) if signature.offset else UTC
    return datetime.fromtimestamp(signature.time, tz=zone).isoformat()


def _log_entry(commit: pygit2.Commit) -> LogEntry:
    """A commit as the log shows it."""
    return LogEntry(
        commit=str(commit.id),
        author=commit.author.name,
        author_email=commit.author.email,
        date=_date(commit.author),
        subject=_subject(commit.message),
    )


class _PathLookup:
    """What the trees of successive commits hold at one path, reading each tree once."""

    def __init__(self, repo: pygit2.Repository, parts: list[str]) -> None:
        self._repo = repo
        self._parts = parts
        self._seen: dict[tuple[pygit2.Oid, int], pygit2.Oid | None] = {}

    def at(self, tree: pygit2.Oid, depth: int = 0) -> pygit2.Oid | None:
        """The id of what `tree` (the folder at `depth` on the path) holds further down it."""
        key = (tree, depth)
        if key in self._seen:
            return self._seen[key]
        if len(self._seen) >= MAX_REMEMBERED_TREES:
            self._seen.clear()
        try:
            entry: pygit2.Object | None = self._repo[tree].peel(pygit2.Tree)[self._parts[depth]]
        except KeyError:
            entry = None
        if entry is None:
            found = None
        elif depth + 1 == len(self._parts):
            found = entry.id
        elif entry.type == pygit2.enums.ObjectType.TREE:
            found = self.at(entry.id, depth + 1)
        else:
            found = None
        self._seen[key] = found
        return found


def _first_parents(repo: pygit2.Repository, start: pygit2.Oid) -> Iterator[pygit2.Commit]:
    """`start` and its first parents, newest first."""
    commit = repo[start].peel(pygit2.Commit)
    while True:
        yield commit
        if not commit.parent_ids:
            return
        commit = repo[commit.parent_ids[0]].peel(pygit2.Commit)


def _touching(repo: pygit2.Repository, start: pygit2.Oid, path: str) -> Iterator[pygit2.Commit]:
    """The commits from `start` back whose first parent held something else at `path`."""
    parts = split_path(path)
    if parts is None:
        return
    lookup = _PathLookup(repo, parts)
    for commit in _first_parents(repo, start):
        before = None
        if commit.parent_ids:
            parent = repo[commit.parent_ids[0]].peel(pygit2.Commit)
            before = lookup.at(parent.tree_id)
        if lookup.at(commit.tree_id) != before:
            yield commit


def log(
    repo: pygit2.Repository, start: pygit2.Oid | None, path: str | None, limit: int
) -> list[LogEntry]:
    """The newest `limit` commits from `start` back, of the whole store or of `path`."""
    if start is None:
        return []
    commits = _first_parents(repo, start) if path is None else _touching(repo, start, path)
    entries: list[LogEntry] = []
    for commit in commits:
        if len(entries) >= limit:
            break
        entries.append(_log_entry(commit))
    return entries


def last_commit(repo: pygit2.Repository, start: pygit2.Oid | None, path: str) -> LastCommit | None:
    """The newest commit from `start` back that touched `path`, None when none did."""
    if start is None:
        return None
    commit = next(_touching(repo, start, path), None)
    return None if commit is None else LastCommit(str(commit.id), commit.message)


def messages(repo: pygit2.Repository, start: pygit2.Oid | None, limit: int) -> list[LastCommit]:
    """The newest `limit` commits from `start` back, each with its whole message."""
    if start is None:
        return []
    found: list[LastCommit] = []
    for commit in _first_parents(repo, start):
        if len(found) >= limit:
            break
        found.append(LastCommit(str(commit.id), commit.message))
    return found
