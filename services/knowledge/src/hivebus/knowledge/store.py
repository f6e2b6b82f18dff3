"""The knowledge store: notes in a Git repository, one commit per accepted write.

Pure of any bus: the service calls `apply_many` with the writes in the order they arrived,
from one thread at a time, and `read`/`list`/`search` from anywhere (they only read HEAD).
A batch applies its writes one after another, each as its own commit on top of the last (a
write sees every earlier one, also for its conflict check), and makes them durable together:
its results are returned only once every commit is on disk and HEAD names the last one.

Each commit's message ends in a `write-id: <id>` line. A write applied again after a crash
that came between its commit and its announcement finds its own commit (among the newest
commits' write ids, `hivebus.knowledge.replays`, or as the note's last commit) and is answered
`committed` with it, so the service announces it (once more: the announcement's message id
drops a repeat).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from hivebus.contracts.knowledge import (
    NoteHit,
    NoteListResult,
    NoteReadResult,
    NoteSearchResult,
    NoteWrite,
    NoteWriteResult,
)
from hivebus.core import get_logger
from hivebus.knowledge.batch import CommitBatch
from hivebus.knowledge.errors import KnowledgeError
from hivebus.knowledge.notes import Note, NoteMeta, check_note_size, parse_note, render_note
from hivebus.knowledge.paths import resolve_in_repo, validate_note_path
from hivebus.knowledge.replays import REPLAY_WINDOW, RecentWrites
from hivebus.knowledge.repo import GitRepo
from hivebus.knowledge.search import query_terms, search_notes
from hivebus.knowledge.search_index import INDEX_FILE, SearchIndex

log = get_logger(__name__)

NEW = "new"
"""`expected_revision` meaning: the note must not exist yet."""

MAX_SEARCHED_NOTES = 5000
"""Search ranks at most this many notes (the index's best matches), so a query stays bounded."""


def author_of(write: NoteWrite) -> str:
    """The commit author: the agent's role and run."""
    return f"{write.role}/{write.run_id}" if write.run_id else write.role


WRITE_ID_TRAILER = "write-id: "
"""Starts the line of a commit message that names the write the commit applied."""


def commit_message(write: NoteWrite) -> str:
    """Names the task, sub-task and run, and the write id (for audits and replays)."""
    where = f"{write.task_id}/{write.subtask_id}" if write.subtask_id else write.task_id
    run = f" (run {write.run_id})" if write.run_id else ""
    return f"{where}: write {write.path}{run}\n\n{WRITE_ID_TRAILER}{write.write_id}\n"


def write_id_of(message: str) -> str | None:
    """The write id a commit message names, None when it names none."""
    ids = [
        line.removeprefix(WRITE_ID_TRAILER).strip()
        for line in message.splitlines()
        if line.startswith(WRITE_ID_TRAILER)
    ]
    return ids[-1] if ids else None


class KnowledgeStore:
    """Applies writes and answers reads over one repository."""

    def __init__(self, root: Path) -> None:
        """Open (or create) the repository at `root`, repairing what a crash left."""
        self.root = root
        self.repo = GitRepo(root)
        root.mkdir(parents=True, exist_ok=True)
        self._base = root.resolve()
        self.repo.recover()
        self.repo.init()
        self._writer = threading.Lock()
        self._recent = RecentWrites(REPLAY_WINDOW)
        newest_first = self.repo.messages(REPLAY_WINDOW)
        self._recent.add(
            (write_id, entry.commit)
            for entry in reversed(newest_first)
            if (write_id := write_id_of(entry.message)) is not None
        )
        self.index = SearchIndex(self.repo.git_dir / INDEX_FILE)
        self._index_to_head()

    def apply(self, write: NoteWrite) -> NoteWriteResult:
        """One write: validated, checked against the expected revision, committed durably.

        Raises the `GitError` of a write whose commit could not be made.
        """
        [result] = self.apply_many([write])
        if isinstance(result, KnowledgeError):
            raise result
        return result

    def apply_many(self, writes: Sequence[NoteWrite]) -> list[NoteWriteResult | KnowledgeError]:
        """Apply `writes` in order, each its own commit; return each one's result, in order.

        A write whose commit could not be made gets its error in its place (a `GitError`, not
        retryable) and the others are applied all the same. Returns once every commit is
        durable and on HEAD; raises a retryable `GitError` when that could not be done, and
        then none of the results may be reported.
        """
        with self._writer:
            batch = self.repo.begin()
            made: dict[str, str] = {}
            results: list[NoteWriteResult | KnowledgeError] = []
            for write in writes:
                try:
                    result = self._apply_one(batch, write, made)
                except KnowledgeError as exc:
                    results.append(exc)
                    continue
                results.append(result)
                if result.status == "committed" and result.commit:
                    made[write.write_id] = result.commit
            batch.finish()
            self._recent.add(made.items())
            if made:
                self._index_to_head(batch.base, batch.written)
        return results

    def never_written(self, paths: Sequence[str]) -> list[bool]:
        """For each path of a batch, in order, whether no earlier write can have changed it.

        True when the path is valid, HEAD holds nothing there and no earlier path of the batch
        is the same one. Notes are never deleted, so no write was ever committed there, and a
        write that was answered before without a commit (`invalid` for its size, `conflict`
        with the revision it expected) meets the same absent note again and gets the same
        answer: the service need not look its result up before applying it. False when HEAD
        cannot be read (then every result is looked up, as before).
        """
        valid: list[str | None] = []
        for path in paths:
            try:
                valid.append(validate_note_path(path))
            except KnowledgeError:
                valid.append(None)
        try:
            absent = self.repo.absent([checked or "" for checked in valid])
        except KnowledgeError as exc:
            log.warning("head_unreadable", error=str(exc))
            return [False] * len(paths)
        seen: set[str] = set()
        fresh: list[bool] = []
        for checked, nothing_there in zip(valid, absent, strict=True):
            fresh.append(checked is not None and nothing_there and checked not in seen)
            if checked is not None:
                seen.add(checked)
        return fresh

    def _index_to_head(
        self, base: str | None = None, written: Mapping[str, str] | None = None
    ) -> None:
        """Bring the search index to HEAD; a failure only delays search.

        With `written`, the notes a batch on top of `base` wrote; else every note changed since
        the index's commit. After a failure, the next batch catches up from there.
        """
        try:
            if written is None:
                self.index.catch_up(self.repo)
            else:
                self.index.follow(self.repo, base, written)
        except (sqlite3.Error, KnowledgeError, OSError) as exc:
            log.warning("search_index_behind", error=str(exc))

    def _apply_one(
        self, batch: CommitBatch, write: NoteWrite, made: dict[str, str]
    ) -> NoteWriteResult:
        """One write on top of the batch so far (`made`: the commits of its earlier writes)."""
        try:
            path = validate_note_path(write.path)
            resolve_in_repo(self.root, path, self._base)
            check_note_size(write.body)
        except KnowledgeError as exc:
            return NoteWriteResult(
                write_id=write.write_id, status="invalid", path=write.path, error=str(exc)
            )
        own = made.get(write.write_id) or self._recent.commit_of(write.write_id)
        revision = batch.blob_revision(path, own) if own is not None else None
        if own is not None and revision is not None:  # applied before: answer as then
            return NoteWriteResult(
                write_id=write.write_id,
                status="committed",
                path=path,
                revision=revision,
                commit=own,
            )
        current = batch.blob_revision(path)
        expected = write.expected_revision
        conflict = (expected == NEW and current is not None) or (
            expected not in {None, NEW} and expected != current
        )
        repeated = current is not None and not conflict and self._already_there(batch, path, write)
        if (conflict or repeated) and current is not None:
            # This very write, redelivered after a crash between its commit and its
            # announcement: its commit is the note's last (and the revision it named is gone).
            # A note that is absent has no last commit of this write: notes are never deleted.
            own = self._own_commit(batch, path, write)
            if own is not None:
                return NoteWriteResult(
                    write_id=write.write_id,
                    status="committed",
                    path=path,
                    revision=current,
                    commit=own,
                )
        if conflict:
            return NoteWriteResult(
                write_id=write.write_id,
                status="conflict",
                path=path,
                current_revision=current,
                current_content=batch.show(path) if current else None,
                error="the note changed since you read it: merge with current_content and "
                "write again naming current_revision",
            )
        if repeated:
            # The same author wrote the same body in another write: nothing to commit.
            return NoteWriteResult(
                write_id=write.write_id, status="unchanged", path=path, revision=current
            )
        meta = NoteMeta(
            title=write.title or Path(path).stem.replace("-", " "),
            tags=write.tags,
            task=write.task_id,
            subtask=write.subtask_id,
            author=author_of(write),
            updated=datetime.now(UTC).replace(microsecond=0),
        )
        text = render_note(Note(meta=meta, body=write.body))
        commit, revision = batch.commit(
            path,
            text,
            author_name=author_of(write),
            author_email=f"{write.role}@agents.hivebus.invalid",
            message=commit_message(write),
        )
        status = "unchanged" if revision == current else "committed"
        return NoteWriteResult(
            write_id=write.write_id, status=status, path=path, revision=revision, commit=commit
        )

    @staticmethod
    def _own_commit(batch: CommitBatch, path: str, write: NoteWrite) -> str | None:
        """The note's last commit if this write made it, else None."""
        last = batch.last_commit(path)
        if last is None or write_id_of(last.message) != write.write_id:
            return None
        return last.commit

    @staticmethod
    def _already_there(batch: CommitBatch, path: str, write: NoteWrite) -> bool:
        """Whether the note holds this write's body already, by this write's author."""
        text = batch.show(path)
        if text is None:
            return False
        try:
            note = parse_note(text, path)
        except KnowledgeError:
            return False
        return note.body.strip() == write.body.strip() and note.meta.author == author_of(write)

    def read(self, path: str) -> NoteReadResult:
        """A note at HEAD and its revision."""
        try:
            valid = validate_note_path(path)
        except KnowledgeError as exc:
            return NoteReadResult(path=path, found=False, error=str(exc))
        note = self.repo.read(valid)
        if note is None:
            return NoteReadResult(path=valid, found=False)
        revision, content = note
        return NoteReadResult(path=valid, found=True, content=content, revision=revision)

    def list(self, prefix: str = "") -> NoteListResult:
        """Note paths under a folder (`""` for all)."""
        folder = prefix.strip("/")
        if folder and not all(
            part and part.replace("-", "").replace("_", "").isalnum() and part == part.lower()
            for part in folder.split("/")
        ):
            return NoteListResult(paths=[], error=f"invalid folder {prefix!r}")
        return NoteListResult(paths=[p for p in self.repo.list_files(folder) if p.endswith(".md")])

    def search(self, query: str, limit: int = 10) -> NoteSearchResult:
        """Ranked full-text hits with snippets, among the notes the index finds for the query."""
        terms = query_terms(query)
        notes: Iterable[tuple[str, str]]
        try:
            notes = self.index.candidates(terms, MAX_SEARCHED_NOTES)
        except sqlite3.Error as exc:  # read every note at HEAD instead, as slow as that is
            log.warning("search_index_unreadable", error=str(exc))
            paths = [p for p in self.repo.list_files() if p.endswith(".md")][:MAX_SEARCHED_NOTES]
            notes = ((p, self.repo.show(p) or "") for p in paths)
        hits = search_notes(notes, query, limit)
        return NoteSearchResult(
            hits=[
                NoteHit(path=h.path, title=h.title, score=h.score, snippet=h.snippet) for h in hits
            ]
        )
