"""Note paths: which names the store accepts, and how they map to files under its root.

A path is checked as text (`validate_note_path`: reads and writes alike, so a name from a model
never reaches git unchecked) and, before every write, against the file system too
(`resolve_in_repo`: no symbolic link on the way, nothing that resolves outside the root), so
a write never lands outside the repository. A task's folder is named by
`hivebus.contracts.knowledge.task_folder`.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path, PurePosixPath

from hivebus.knowledge.errors import InvalidPathError

NOTE_PATH_PATTERN = r"[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)*\.md"
"""A note path: lower-case ASCII segments joined by '/', ending in `.md`; none starts with '-'."""

MAX_PATH_CHARS = 200
"""Longest accepted note path, in characters."""

MAX_PATH_LEVELS = 8
"""Most '/'-separated segments in a note path, the file name included."""

SHARED = "shared"
"""Folder for notes that outlive any one task."""

_NOTE_PATH_RE = re.compile(NOTE_PATH_PATTERN)


def _reason(path: str) -> str:
    """Explain why a path that does not match `NOTE_PATH_PATTERN` fails, as precisely as we can."""
    segments = path.split("/")
    checks: list[tuple[bool, str]] = [
        (segments[0] == ".git", "nothing under '.git' may be read or written"),
        (path.startswith("/"), "absolute paths are not allowed"),
        ("\\" in path, "backslashes are not allowed; separate folders with '/'"),
        (any(c.isspace() for c in path), "spaces and line breaks are not allowed"),
        (not path.isprintable(), "control and invisible characters are not allowed"),
        (not path.isascii(), "only ASCII letters, digits, '_', '-' and '/' are allowed"),
        (path != path.lower(), "upper-case letters are not allowed"),
        (".." in segments, "'..' is not allowed"),
        ("." in segments, "'.' segments are not allowed"),
        ("//" in path or path.endswith("/"), "empty segments are not allowed"),
        (not path.endswith(".md"), "the path must end in '.md'"),
        (
            any(s[:1] in {"-", "_", "."} for s in segments),
            "a segment may not start with '-', '_' or '.'",
        ),
    ]
    for failed, reason in checks:
        if failed:
            return reason
    return "only a-z, 0-9, '_' and '-' are allowed in a segment, and '.' only in '.md'"


def validate_note_path(path: str) -> str:
    """Return `path` if it is an acceptable note path, else raise `InvalidPathError` with why."""
    if not path:
        raise InvalidPathError(path, "the path is empty")
    if len(path) > MAX_PATH_CHARS:
        raise InvalidPathError(path, f"the path is longer than {MAX_PATH_CHARS} characters")
    if "\x00" in path:
        raise InvalidPathError(path, "NUL characters are not allowed")
    if _NOTE_PATH_RE.fullmatch(path) is None:
        raise InvalidPathError(path, _reason(path))
    parts = path.split("/")
    if len(parts) > MAX_PATH_LEVELS:
        raise InvalidPathError(path, f"the path is deeper than {MAX_PATH_LEVELS} levels")
    # The pattern already excludes it; checked again so the rule survives a change of pattern.
    if parts[0] == ".git":
        raise InvalidPathError(path, "nothing under '.git' may be read or written")
    return path


def resolve_in_repo(root: Path, path: str, base: Path | None = None) -> Path:
    """Map a note path to its file under `root`, refusing symbolic links and escapes.

    `base` is `root` already resolved (a store resolves its root once). One `lstat` per folder
    on the way, up to the first that is not there (or not a folder): nothing below it can be a
    link.
    """
    valid = validate_note_path(path)
    base = base if base is not None else root.resolve()
    current = base
    for part in PurePosixPath(valid).parts:
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except (FileNotFoundError, NotADirectoryError):  # nothing there, or a file above
            break
        if stat.S_ISLNK(mode):
            raise InvalidPathError(path, "the path goes through a symbolic link")
    target = base / valid
    # No link on the way and no '..' in a valid path: checked again so the rule survives a
    # change of pattern.
    if not Path(os.path.normpath(target)).is_relative_to(base):
        raise InvalidPathError(path, "the path resolves outside the store")
    return target
