"""Notes: Markdown with YAML front matter, rendered and parsed without touching the disk.

A note on disk reads::

    ---
    title: Design of the cache
    tags: [cache]
    ...
    ---

    # Design of the cache
    ...

A file a person wrote without front matter is still a note: its title is its first `# ` heading,
or the file name when it has none.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hivebus.knowledge.errors import InvalidNoteError, NoteTooLargeError

MAX_NOTE_BYTES = 256 * 1024
"""Largest note the store keeps, front matter included, in bytes of UTF-8."""

UNKNOWN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
"""`updated` of a note whose front matter does not say when it was written."""

UNKNOWN_AUTHOR = "unknown"
"""`author` of a note whose front matter does not name one."""

_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""The safe dumper and loader of libyaml where PyYAML has them: the same YAML, several times faster
(front matter is rendered, and checked, once per commit)."""

_FRONT_MATTER_RE = re.compile(
    r"\A---[ \t]*\r?\n(?P<yaml>.*?)^---[ \t]*(?:\r?\n|\Z)", re.MULTILINE | re.DOTALL
)
_HEADING_RE = re.compile(r"^# +(?P<title>.+?)[ \t#]*$", re.MULTILINE)


class NoteMeta(BaseModel):
    """A note's front matter."""

    model_config = ConfigDict(extra="ignore")

    title: str = Field(description="Human title; defaults to the first heading or the file name.")
    tags: list[str] = Field(default_factory=list, description="Free-form labels.")
    task: str | None = Field(default=None, description="The task the note was written for.")
    subtask: str | None = Field(default=None, description="The sub-task that wrote it.")
    author: str = Field(default=UNKNOWN_AUTHOR, description="Who wrote it: role and run.")
    updated: datetime = Field(default=UNKNOWN_TIME, description="When it was last written.")


class Note(BaseModel):
    """A note: front matter and Markdown body."""

    meta: NoteMeta
    body: str


def _dump_yaml(data: dict[str, Any]) -> str:
    """Dump front matter readably, falling back to escaped ASCII when Unicode would not survive."""
    options: dict[str, Any] = {"Dumper": _DUMPER, "sort_keys": False, "width": 2**31 - 1}
    readable: str = yaml.dump(data, allow_unicode=True, **options)
    if readable.isascii():  # escaping would change nothing: no need to check the round trip
        return readable
    # Some characters (U+0085, U+2028, ...) are line breaks to YAML and do not round-trip raw.
    if yaml.load(readable, Loader=_LOADER) == data:  # noqa: S506 - a safe loader
        return readable
    escaped: str = yaml.dump(data, allow_unicode=False, **options)
    return escaped


def render_note(note: Note) -> str:
    """Render a note as `---`, its YAML front matter, `---`, a blank line and the body."""
    front = _dump_yaml(note.meta.model_dump(mode="json"))
    return f"---\n{front}---\n\n{note.body}"


def _fallback_title(body: str, path: str) -> str:
    """Title of a note without one: its first `# ` heading, else the stem of its path."""
    heading = _HEADING_RE.search(body)
    if heading is not None:
        return heading.group("title").strip()
    return PurePosixPath(path).stem if path else ""


def parse_note(text: str, path: str = "") -> Note:
    """Parse a note's text; `path` names the file, whose stem is the title of last resort."""
    match = _FRONT_MATTER_RE.match(text)
    if match is None:
        if re.match(r"---[ \t]*\r?\n", text):
            raise InvalidNoteError("the front matter has no closing '---' line")
        return Note(meta=NoteMeta(title=_fallback_title(text, path)), body=text)
    try:
        data = yaml.load(match.group("yaml"), Loader=_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise InvalidNoteError(f"the front matter is not valid YAML ({exc})") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidNoteError("the front matter is not a mapping of names to values")
    body = text[match.end() :]
    body = body.removeprefix("\r\n") if body.startswith("\r\n") else body.removeprefix("\n")
    if "title" not in data:
        data["title"] = _fallback_title(body, path)
    try:
        meta = NoteMeta.model_validate(data)
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) or "?" for e in exc.errors())
        raise InvalidNoteError(f"front matter field(s) with a wrong value: {fields}") from exc
    return Note(meta=meta, body=body)


def check_note_size(text: str, limit: int = MAX_NOTE_BYTES) -> int:
    """Return the note's size in bytes of UTF-8, or raise `NoteTooLargeError` if over `limit`."""
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > limit:
        raise NoteTooLargeError(size, limit)
    return size
