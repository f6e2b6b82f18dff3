"""The working tree: a copy of HEAD's notes as files, for people and tools that read files.

Git's objects and HEAD are the store's truth; the files follow them. A file is replaced
atomically (a temporary file renamed over it), so a reader never sees half a note, but it is
not fsynced: after a crash `restore` rewrites every file of HEAD that is missing or differs.
No file is ever written through a symbolic link or outside the root.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import pygit2
from pygit2.enums import FileMode, ObjectType

from hivebus.core import get_logger
from hivebus.knowledge.trees import split_path

__all__ = ["TEMP_SUFFIX", "remove_temp_files", "restore", "write_file"]

log = get_logger(__name__)

TEMP_SUFFIX = ".hivebus-tmp"
"""Suffix of the temporary files of atomic writes; any left at start-up are removed."""


class UnsafePathError(OSError):
    """A file would be written through a symbolic link, or the path is not one a tree holds."""


def _target(root: Path, path: str, checked: set[Path] | None = None) -> tuple[Path, list[Path]]:
    """The file for `path` under `root`, and the folders on the way that do not exist yet.

    Refuses a symbolic link on the way (the file itself included). One `lstat` per folder, and
    none below the first folder that is missing. `checked` remembers folders already found
    safe, so many files under one folder look at it once.
    """
    parts = split_path(path)
    if parts is None:
        raise UnsafePathError(f"not a path a note can have: {path!r}")
    current, missing = root, list[Path]()
    for part in parts:
        current /= part
        if missing:
            missing.append(current)
            continue
        if checked is not None and current in checked:
            continue
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            missing.append(current)
            continue
        if stat.S_ISLNK(mode):
            raise UnsafePathError(f"{path!r} goes through a symbolic link")
        if checked is not None and stat.S_ISDIR(mode):
            checked.add(current)
    return current, [folder for folder in missing if folder != current]


def write_file(root: Path, path: str, data: bytes, checked: set[Path] | None = None) -> None:
    """Replace the file at `path` atomically (a temporary file, then a rename); no fsync.

    About six system calls for a new note in a new folder (the folder's `lstat` and `mkdir`,
    the temporary file's open, write and close, the rename).
    """
    target, missing = _target(root, path, checked)
    for folder in missing:
        folder.mkdir(exist_ok=True)
        if checked is not None:
            checked.add(folder)
    tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _differs(target: str, blob: pygit2.Oid) -> bool:
    """Whether the file at `target` is missing, not a regular file, or holds other bytes."""
    try:
        if not stat.S_ISREG(os.lstat(target).st_mode):
            return True
        with open(target, "rb") as file:  # noqa: PTH123 - os-level on purpose: start-up speed
            return pygit2.hash(file.read()) != blob
    except OSError:
        return True


def restore(repo: pygit2.Repository, root: Path, tree: pygit2.Tree) -> list[str]:
    """Rewrite every regular file of `tree` whose working-tree copy is missing or differs.

    Returns the paths rewritten. A folder that is a symbolic link is not entered, and a path
    that cannot be written (a folder where the file should be) is logged and left as it is.
    """
    restored: list[str] = []
    stack: list[tuple[pygit2.Tree, str, str]] = [(tree, str(root), "")]
    while stack:
        folder, directory, base = stack.pop()
        for entry in folder:
            name = entry.name or ""
            path = f"{base}{name}"
            target = os.path.join(directory, name)  # noqa: PTH118 - str paths: start-up speed
            if not name or split_path(path) is None:
                continue
            if entry.type == ObjectType.TREE:
                if os.path.islink(target):  # noqa: PTH114 - as above
                    log.warning("working_tree_restore_failed", path=path, error="symbolic link")
                else:
                    stack.append((repo[entry.id].peel(pygit2.Tree), target, f"{path}/"))
                continue
            if entry.type != ObjectType.BLOB or entry.filemode == FileMode.LINK:
                continue
            if not _differs(target, entry.id):
                continue
            try:
                write_file(root, path, repo[entry.id].peel(pygit2.Blob).data)
            except OSError as exc:
                log.warning("working_tree_restore_failed", path=path, error=str(exc))
            else:
                restored.append(path)
    return restored


def remove_temp_files(root: Path, git_dir: Path) -> None:
    """Remove the temporary files atomic writes left in the working tree.

    `.git` is not walked: what git does in there (a `git gc` removing folders) is not ours.
    """
    for folder, subfolders, files in os.walk(root):
        if Path(folder) == root and git_dir.name in subfolders:
            subfolders.remove(git_dir.name)
        for name in files:
            if name.endswith(TEMP_SUFFIX):
                (Path(folder) / name).unlink(missing_ok=True)
