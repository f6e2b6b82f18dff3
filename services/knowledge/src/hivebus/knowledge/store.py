"""The knowledge store: notes in a Git repository, one commit per accepted write.

Pure of any bus: the service calls `apply` for each write, in order, from one thread, and
`read`/`list`/`search` from anywhere (they only read the repository).

Each commit's message ends in a `write-id: <id>` line. A write applied again after a crash
that came between its commit and its announcement finds its own id in the note's last commit
and is answered `committed` with that commit, so the service announces it (once more: the
announcement's message id drops a repeat).
"""

from __future__ import annotations

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
from hivebus.knowledge.errors import KnowledgeError
from hivebus.knowledge.notes import Note, NoteMeta, check_note_size, parse_note, render_note
from hivebus.knowledge.paths import resolve_in_repo, validate_note_path
from hivebus.knowledge.repo import GitRepo
from hivebus.knowledge.search import search_notes

NEW = "new"
"""`expected_revision` meaning: the note must not exist yet."""

MAX_SEARCHED_NOTES = 5000
"""Search reads at most this many notes (newest layout order), so a query stays bounded."""


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
        self.repo.recover()
        self.repo.init()

    def apply(self, write: NoteWrite) -> NoteWriteResult:
        """One write: validated, checked against the expected revision, committed."""
        try:
            path = validate_note_path(write.path)
            resolve_in_repo(self.root, path)
            check_note_size(write.body)
        except KnowledgeError as exc:
            return NoteWriteResult(
                write_id=write.write_id, status="invalid", path=write.path, error=str(exc)
            )
        current = self.repo.blob_revision(path)
        expected = write.expected_revision
        conflict = (expected == NEW and current is not None) or (
            expected not in {None, NEW} and expected != current
        )
        repeated = current is not None and not conflict and self._already_there(path, write)
        if conflict or repeated:
            # This very write, redelivered after a crash between its commit and its
            # announcement: its commit is the note's last (and the revision it named is gone).
            own = self._own_commit(path, write)
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
                current_content=self.repo.show(path) if current else None,
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
        commit, revision = self.repo.write_and_commit(
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

    def _own_commit(self, path: str, write: NoteWrite) -> str | None:
        """The note's last commit if this write made it, else None."""
        last = self.repo.last_commit(path)
        if last is None or write_id_of(last.message) != write.write_id:
            return None
        return last.commit

    def _already_there(self, path: str, write: NoteWrite) -> bool:
        """Whether the note at HEAD already has this write's body, by this write's author."""
        text = self.repo.show(path)
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
        content = self.repo.show(valid)
        if content is None:
            return NoteReadResult(path=valid, found=False)
        return NoteReadResult(
            path=valid, found=True, content=content, revision=self.repo.blob_revision(valid)
        )

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
        """Ranked full-text hits with snippets."""
        paths = [p for p in self.repo.list_files() if p.endswith(".md")][:MAX_SEARCHED_NOTES]
        notes = ((p, (self.root / p).read_text(encoding="utf-8", errors="replace")) for p in paths)
        hits = search_notes(notes, query, limit)
        return NoteSearchResult(
            hits=[
                NoteHit(path=h.path, title=h.title, score=h.score, snippet=h.snippet) for h in hits
            ]
        )
