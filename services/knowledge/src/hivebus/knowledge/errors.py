"""Errors raised by hivebus-knowledge.

KnowledgeError                root; `retryable` says whether trying again can help
├── InvalidPathError          a note path is not `[a-z0-9_-]` segments ending in `.md`, or
│                             leads through a symbolic link or out of the store
├── NoteTooLargeError         a note is over `MAX_NOTE_BYTES` once encoded
├── InvalidNoteError          a note's front matter is not valid YAML or has wrong fields
└── GitError                  (in `hivebus.knowledge.git`) a git call failed; retryable
                              only when it timed out

Every message of the first three says what to do instead, because it may reach a model as a
tool result (as the `error` of an `invalid` write). A `GitError` never does: it settles the
write message (nak when retryable, else terminate).
"""

from __future__ import annotations

_SHOWN_PATH_CHARS = 80
"""How much of a rejected path a message repeats, so a hostile 10 kB path stays out of logs."""


def _shown(path: str) -> str:
    """Quote a path for a message, shortened when it is long."""
    if len(path) <= _SHOWN_PATH_CHARS:
        return repr(path)
    return f"{path[:_SHOWN_PATH_CHARS]!r}... ({len(path)} characters)"


class KnowledgeError(Exception):
    """Root of the errors raised by `hivebus.knowledge`."""

    retryable = False


class InvalidPathError(KnowledgeError):
    """A note path was refused; `reason` says why, the message says what a good path looks like."""

    def __init__(self, path: str, reason: str) -> None:
        """Name the refused path and the reason it was refused."""
        super().__init__(
            f"invalid note path {_shown(path)}: {reason}; use lower-case segments of a-z, 0-9, "
            "'_' and '-' joined by '/' and ending in '.md', such as 'shared/design-notes.md'"
        )
        self.path = path
        self.reason = reason


class NoteTooLargeError(KnowledgeError):
    """A note is larger than the store accepts."""

    def __init__(self, size: int, limit: int) -> None:
        """Give the note's size and the limit, both in bytes of UTF-8."""
        super().__init__(
            f"note is {size} bytes, over the limit of {limit} bytes; shorten it or split it "
            "into several notes that link to each other"
        )
        self.size = size
        self.limit = limit


class InvalidNoteError(KnowledgeError):
    """A note's text cannot be read as Markdown with YAML front matter."""

    def __init__(self, reason: str) -> None:
        """Say what is wrong with the note."""
        super().__init__(
            f"invalid note: {reason}; start the note with YAML front matter between two '---' "
            "lines (title, tags, task, subtask, author, updated) or leave the front matter out"
        )
        self.reason = reason
