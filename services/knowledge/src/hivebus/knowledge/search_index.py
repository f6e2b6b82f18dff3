"""The search index: an SQLite FTS5 table of the notes at HEAD, kept by the writer.

A query asks it for the notes that contain any of its terms (best bm25 first, at most a
bound) and ranks those with `hivebus.knowledge.search`, so a query reads the notes that match,
not every note. The index is derived data in `.git/hivebus-search.sqlite3` (outside the working
tree, never committed). It names the commit it reflects. After a batch of commits on top of
that commit, `follow` indexes the notes the batch wrote; otherwise (at start-up, after a failed
update) `catch_up` brings it to HEAD from its commit, reading the notes that changed since (all
of them when it is new or unreadable).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from hivebus.core import get_logger
from hivebus.knowledge.errors import InvalidNoteError
from hivebus.knowledge.notes import parse_note
from hivebus.knowledge.repo import GitRepo

__all__ = ["INDEX_FILE", "SearchIndex"]

log = get_logger(__name__)

INDEX_FILE = "hivebus-search.sqlite3"
"""Name of the index in the repository's `.git` directory."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files(id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE,
                                 text TEXT NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS words USING fts5(title, body, tags);
"""
"""`files` keeps each note's text by path; `words` indexes it, its rowid the `files` id."""


def _fields(path: str, text: str) -> tuple[str, str, str]:
    """The title, body and tags search scores a note by, as `search_notes` reads them."""
    try:
        note = parse_note(text, path)
    except InvalidNoteError:
        return PurePosixPath(path).stem, text, ""
    return note.meta.title, note.body, " ".join(note.meta.tags)


class SearchIndex:
    """The FTS5 index of one repository's notes; written by one thread, read by any."""

    def __init__(self, path: Path) -> None:
        """Use (or create) the index file at `path`."""
        self.path = path
        self._local = threading.local()

    def _db(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # derived data: rebuilt when behind
            db.executescript(_SCHEMA)
            self._local.db = db
        return db

    def indexed_commit(self) -> str | None:
        """The commit whose notes the index holds, None when it holds none yet."""
        row = self._db().execute("SELECT value FROM meta WHERE key = 'commit'").fetchone()
        return str(row[0]) if row else None

    def catch_up(self, repo: GitRepo) -> None:
        """Bring the index to HEAD: re-read the notes changed since its commit, or all of them.

        An unreadable index file is removed and built again.
        """
        try:
            self._catch_up(repo)
        except sqlite3.DatabaseError as exc:
            log.warning("search_index_rebuilt", path=str(self.path), error=str(exc))
            self.close()
            for leftover in (self.path, *(Path(f"{self.path}{s}") for s in ("-wal", "-shm"))):
                leftover.unlink(missing_ok=True)
            self._catch_up(repo)

    def follow(self, repo: GitRepo, base: str | None, written: Mapping[str, str]) -> None:
        """After a batch on top of commit `base` that wrote `written` (text by path), index it.

        Costs as much as the batch, not as the repository, when the index was at `base`;
        catches up from wherever it is otherwise.
        """
        head = repo.head_commit()
        if base is None or head is None or self.indexed_commit() != base:
            self.catch_up(repo)
        elif head != base:
            self._index(head, sorted(written.items()), everything=False)

    def _catch_up(self, repo: GitRepo) -> None:
        head = repo.head_commit()
        indexed = self.indexed_commit()
        if head is None or head == indexed:
            return
        changed = repo.changed_paths(indexed, head) if indexed is not None else None
        notes = [p for p in changed if p.endswith(".md")] if changed is not None else None
        files = repo.read_files(head, notes)
        notes_now = [(p, t) for p, t in files if p.endswith(".md")]
        self._index(head, notes_now, everything=notes is None)

    def _index(
        self, head: str, notes: Iterable[tuple[str, str | None]], *, everything: bool
    ) -> None:
        """Index `notes` (text None: gone) as of commit `head`, in one transaction.

        With `everything`, `notes` are all the notes there are: the index is emptied first.
        """
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            if everything:
                db.execute("DELETE FROM words")
                db.execute("DELETE FROM files")
            for path, text in notes:
                self._put(db, path, text)
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('commit', ?)", (head,))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        if everything:  # a rebuild leaves a large write-ahead log: fold it in now
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @staticmethod
    def _put(db: sqlite3.Connection, path: str, text: str | None) -> None:
        """Index the note at `path` as `text`; drop it when `text` is None (it is gone)."""
        row = db.execute("SELECT id FROM files WHERE path = ?", (path,)).fetchone()
        if row is not None:
            db.execute("DELETE FROM words WHERE rowid = ?", (row[0],))
            db.execute("DELETE FROM files WHERE id = ?", (row[0],))
        if text is None:
            return
        cursor = db.execute("INSERT INTO files(path, text) VALUES (?, ?)", (path, text))
        title, body, tags = _fields(path, text)
        db.execute(
            "INSERT INTO words(rowid, title, body, tags) VALUES (?, ?, ?, ?)",
            (cursor.lastrowid, title, body, tags),
        )

    def candidates(self, terms: list[str], limit: int) -> list[tuple[str, str]]:
        """`(path, text)` of the notes holding any of `terms` (as words), best first."""
        if not terms:
            return []
        match = " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)
        rows = self._db().execute(
            "SELECT files.path, files.text FROM words JOIN files ON files.id = words.rowid "
            "WHERE words MATCH ? ORDER BY words.rank LIMIT ?",
            (match, limit),
        )
        return [(str(path), str(text)) for path, text in rows]

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
