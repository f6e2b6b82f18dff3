"""Git trees in process: what a path holds, the files under a folder, and editing one file.

`TreeEditor` keeps the tree of a chain of commits as one `TreeBuilder` per folder on the paths
written so far, so a commit rewrites only the trees on its note's path (the note's folder, each
folder above it, the root) and never reads back a tree it wrote itself. There is no index and no
working-tree scan, so a commit's cost does not grow with the number of notes, only with the size
of the folders on its path.
"""

from __future__ import annotations

import pygit2
from pygit2.enums import FileMode, ObjectType

__all__ = ["TreeEditor", "blob_at", "entry_at", "files_under", "read_files", "split_path"]

_FILE_MODES = frozenset({FileMode.BLOB, FileMode.BLOB_EXECUTABLE})


def split_path(path: str) -> list[str] | None:
    """The segments of a repository path; None for a path no tree can hold safely.

    Refused: empty, absolute, NUL or a line break, empty, `.` or `..` segments, `.git`.
    """
    if not path or "\x00" in path or "\n" in path or "\r" in path:
        return None
    parts = path.split("/")
    if any(part in {"", ".", ".."} or part.lower() == ".git" for part in parts):
        return None
    return parts


def entry_at(tree: pygit2.Tree, path: str) -> pygit2.Object | None:
    """The entry (file or folder) `tree` holds at `path`, None when it holds none."""
    if split_path(path) is None:
        return None
    try:
        return tree[path]
    except KeyError:
        return None


def blob_at(tree: pygit2.Tree, path: str) -> pygit2.Object | None:
    """The regular file `tree` holds at `path`, None when it holds none (or a folder there)."""
    entry = entry_at(tree, path)
    if entry is None or entry.type != ObjectType.BLOB or entry.filemode not in _FILE_MODES:
        return None
    return entry


def files_under(repo: pygit2.Repository, tree: pygit2.Tree, prefix: str = "") -> list[str]:
    """Sorted paths of the regular files in `tree`, all of them or those under folder `prefix`.

    A `prefix` naming a file gives that file alone, as a literal `git ls-files` pathspec does.
    """
    start: pygit2.Tree = tree
    if prefix:
        entry = entry_at(tree, prefix)
        if entry is None:
            return []
        if entry.type != ObjectType.TREE:
            return [prefix] if blob_at(tree, prefix) is not None else []
        start = repo[entry.id].peel(pygit2.Tree)
    found: list[str] = []
    stack: list[tuple[pygit2.Tree, str]] = [(start, f"{prefix}/" if prefix else "")]
    while stack:
        folder, base = stack.pop()
        for entry in folder:
            if entry.type == ObjectType.TREE:
                stack.append((repo[entry.id].peel(pygit2.Tree), f"{base}{entry.name}/"))
            elif entry.type == ObjectType.BLOB and entry.filemode in _FILE_MODES:
                found.append(f"{base}{entry.name}")
    return sorted(found)


def read_files(
    repo: pygit2.Repository, tree: pygit2.Tree, paths: list[str] | None = None
) -> list[tuple[str, bytes | None]]:
    """The bytes of the regular files at `paths` in `tree`, or of all when `paths` is None.

    None stands for a path with no regular file; each folder is read once, however many of
    the files it holds.
    """
    if paths is None:
        paths = files_under(repo, tree)
    folders: dict[str, pygit2.Tree | None] = {"": tree}

    def folder_of(path: str) -> pygit2.Tree | None:
        if path not in folders:
            parent, _, name = path.rpartition("/")
            above = folder_of(parent)
            entry = above[name] if above is not None and name in above else None
            is_tree = entry is not None and entry.type == ObjectType.TREE
            folders[path] = repo[entry.id].peel(pygit2.Tree) if entry and is_tree else None
        return folders[path]

    found: list[tuple[str, bytes | None]] = []
    for path in paths:
        parts = split_path(path)
        folder = folder_of("/".join(parts[:-1])) if parts else None
        entry = folder[parts[-1]] if folder is not None and parts and parts[-1] in folder else None
        is_file = entry is not None and entry.type == ObjectType.BLOB
        if entry is None or not is_file or entry.filemode not in _FILE_MODES:
            found.append((path, None))
        else:
            found.append((path, repo[entry.id].peel(pygit2.Blob).data))
    return found


class TreeEditor:
    """The tree of a chain of commits, changed one file at a time.

    Folders not on any path read or written so far are never read. After a failed `put`, `reset`
    to the last tree that was committed: a half-made change must not leak into the next one.
    """

    def __init__(self, repo: pygit2.Repository, root: pygit2.Oid | None) -> None:
        """Edit on top of the tree `root` (None: the empty tree of a repository without HEAD)."""
        self._repo = repo
        self._root = root
        self._folders: dict[str, pygit2.TreeBuilder] = {}

    def reset(self, root: pygit2.Oid | None) -> None:
        """Forget every change not committed: edit on top of `root` again."""
        self._root = root
        self._folders.clear()

    def _folder(self, folder: str) -> pygit2.TreeBuilder:
        """The builder of `folder` ("" for the root), made from the current tree on first use."""
        builder = self._folders.get(folder)
        if builder is not None:
            return builder
        if not folder:
            builder = self._repo.TreeBuilder(self._root) if self._root else self._repo.TreeBuilder()
        else:
            parent, _, name = folder.rpartition("/")
            entry = self._folder(parent).get(name)
            if entry is None:
                builder = self._repo.TreeBuilder()
            elif entry.type == ObjectType.TREE:
                builder = self._repo.TreeBuilder(entry.id)
            else:
                raise ValueError(f"a file is in the way of folder {folder!r}")
        self._folders[folder] = builder
        return builder

    def blob(self, path: str) -> pygit2.Object | None:
        """The regular file the current tree holds at `path`, None when it holds none.

        Opens the builders of the folders on the path, which a `put` of it needs next.
        """
        parts = split_path(path)
        if parts is None:
            return None
        builder = self._folder("")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder not in self._folders:
                entry = builder.get(parts[depth - 1])
                if entry is None or entry.type != ObjectType.TREE:
                    return None
            builder = self._folder(folder)
        entry = builder.get(parts[-1])
        if entry is None or entry.type != ObjectType.BLOB or entry.filemode not in _FILE_MODES:
            return None
        return entry

    def put(self, path: str, blob: pygit2.Oid) -> pygit2.Oid:
        """Set the file at `path` to `blob`; return the id of the new root tree.

        Writes one tree object per folder on the path, deepest first.
        """
        parts = split_path(path)
        if parts is None:
            raise ValueError(f"{path!r} is not a path a tree can hold")
        folders = ["/".join(parts[:depth]) for depth in range(len(parts))]
        builders = [self._folder(folder) for folder in folders]
        name, oid, mode = parts[-1], blob, FileMode.BLOB
        for depth in reversed(range(len(folders))):
            existing = builders[depth].get(name)
            if mode == FileMode.BLOB and existing is not None and existing.type == ObjectType.TREE:
                raise ValueError(f"a folder is in the way of file {path!r}")
            builders[depth].insert(name, oid, mode)
            oid = builders[depth].write()
            name, mode = (parts[depth - 1] if depth else ""), FileMode.TREE
        self._root = oid
        return oid
