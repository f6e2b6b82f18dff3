"""Requests to the knowledge store and what it answers: data only."""

from __future__ import annotations

import hashlib
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hivebus.contracts.ids import Identifier

MAX_NOTE_CHARS = 256 * 1024
"""Largest note body accepted, in characters (the store also checks bytes)."""


TASK_SHARDS_HEX = 2
"""Hex digits naming a task folder's shard: 256 folders under `tasks/`."""


def task_folder(task_id: str) -> str:
    """The knowledge-store folder of a task: `tasks/<shard>/<task id, lower case>`.

    The shard is the first two hex digits of the SHA-256 of the lower-cased id. A commit
    rewrites every folder on its note's path, so one folder per task directly under `tasks/`
    made each commit cost more as tasks accumulated (40 ms instead of 12 at 10,000 tasks);
    256 shards keep each folder on the path small. Task ids match `ID_PATTERN`, so the
    lower-cased id is always a valid path segment.
    """
    name = task_id.lower()
    shard = hashlib.sha256(name.encode()).hexdigest()[:TASK_SHARDS_HEX]
    return f"tasks/{shard}/{name}"


def output_note_path(task_id: str, subtask_id: str) -> str:
    """Where a sub-task's large output is kept in the knowledge store."""
    return f"{task_folder(task_id)}/outputs/{subtask_id.lower()}.md"


def _write_id() -> str:
    return uuid.uuid4().hex


class NoteWrite(BaseModel):
    """Write (create or replace) one note; applied by the store's single writer, in order."""

    model_config = ConfigDict(extra="forbid")

    write_id: str = Field(default_factory=_write_id, description="Idempotency key of the write.")
    task_id: Identifier
    subtask_id: str | None = None
    run_id: str | None = None
    role: str = Field(default="system", max_length=64, description="The author's role.")
    path: str = Field(max_length=200, description="Note path, `[a-z0-9/_-]+.md`.")
    title: str = Field(default="", max_length=200)
    tags: list[str] = Field(default_factory=list, max_length=32)
    body: str = Field(max_length=MAX_NOTE_CHARS)
    expected_revision: str | None = Field(
        default=None,
        description="Blob revision the writer read; a different current one is a conflict. "
        "`new` means the note must not exist yet.",
    )


class NoteWriteResult(BaseModel):
    """What happened to a write."""

    model_config = ConfigDict(extra="forbid")

    write_id: str
    status: Literal["committed", "unchanged", "conflict", "invalid"]
    path: str
    revision: str | None = Field(default=None, description="Blob revision after the write.")
    commit: str | None = None
    current_revision: str | None = Field(default=None, description="On conflict: what is there.")
    current_content: str | None = Field(default=None, description="On conflict: the note now.")
    error: str | None = None


class NoteRead(BaseModel):
    """Read one note."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(max_length=200)


class NoteReadResult(BaseModel):
    """One note, with the revision to name when writing it back."""

    model_config = ConfigDict(extra="forbid")

    path: str
    found: bool
    content: str | None = None
    revision: str | None = None
    error: str | None = None


class NoteList(BaseModel):
    """List notes under a folder."""

    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(default="", max_length=200)


class NoteListResult(BaseModel):
    """Note paths."""

    model_config = ConfigDict(extra="forbid")

    paths: list[str]
    error: str | None = None


class NoteSearch(BaseModel):
    """Full-text search over every note."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(max_length=500)
    limit: int = Field(default=10, ge=1, le=100)


class NoteHit(BaseModel):
    """One search result."""

    model_config = ConfigDict(extra="forbid")

    path: str
    title: str
    score: float
    snippet: str


class NoteSearchResult(BaseModel):
    """Ranked hits."""

    model_config = ConfigDict(extra="forbid")

    hits: list[NoteHit]
    error: str | None = None


class NoteLog(BaseModel):
    """The history of the store, or of one note."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(default=None, max_length=200)
    limit: int = Field(default=20, ge=1, le=1000)


class NoteLogEntry(BaseModel):
    """One commit."""

    model_config = ConfigDict(extra="forbid")

    commit: str
    author: str
    date: str
    subject: str


class NoteLogResult(BaseModel):
    """Commits, newest first."""

    model_config = ConfigDict(extra="forbid")

    entries: list[NoteLogEntry]
    error: str | None = None
