"""Making writes durable: one `syncfs(2)` for a whole batch of objects, `fsync(2)` for a ref.

A commit's objects are written without an fsync each (about 5 files per commit, ~1.7 ms per
fsync here); one `sync_filesystem` of the repository's file system then makes every one of a
batch's objects durable at once, before any ref points at them.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["fsync_file", "sync_filesystem"]


def _find_syncfs() -> Callable[[int], int] | None:
    """The `syncfs` of the C library, None where there is none (not Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except (OSError, TypeError):  # TypeError: Windows takes no `None` library
        return None
    syncfs: Callable[[int], int] | None = getattr(libc, "syncfs", None)
    return syncfs


_SYNCFS = _find_syncfs()


def sync_filesystem(path: Path) -> None:
    """Write every dirty page and inode of the file system holding `path` to disk.

    `syncfs(2)` where libc has it; elsewhere `os.sync()`, which syncs every file system.
    Raises `OSError` when the kernel reports a failed write-back.
    """
    if _SYNCFS is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if _SYNCFS(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"syncfs failed: {os.strerror(errno)}", str(path))
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Make `path` and its directory entry durable (fsync of the file, then of its folder)."""
    for target in (path, path.parent):
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
