"""Workspace file tools: read, list and write files inside the configured workspace directory.

Every path is relative to the workspace root; absolute paths, `..` that leaves the root and
symbolic links are refused, so a model cannot reach anything outside it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

from hivebus.agent.errors import ToolFailure
from hivebus.agent.tool import ToolContext, tool
from hivebus.contracts import ToolErrorKind

MAX_FILE_BYTES = 1024 * 1024
MAX_LIST_ENTRIES = 500


def resolve_in_workspace(root: Path, relative: str) -> Path:
    """Map a model-given relative path into the workspace, or raise `ToolFailure`."""
    if not relative or "\x00" in relative:
        raise ToolFailure(
            "empty or invalid path",
            "give a relative path such as 'notes/a.md'",
            ToolErrorKind.INVALID_ARGUMENTS,
        )
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts:
        raise ToolFailure(
            f"path {relative!r} leaves the workspace",
            "use a path relative to the workspace root, without '..'",
            ToolErrorKind.INVALID_ARGUMENTS,
        )
    root = root.resolve()
    candidate = root.joinpath(*pure.parts)
    current = root
    for part in pure.parts:
        current = current / part
        if current.is_symlink():
            raise ToolFailure(
                f"path {relative!r} goes through a symbolic link",
                "use paths of ordinary files and directories only",
                ToolErrorKind.DENIED,
            )
    if not candidate.resolve().is_relative_to(root):
        raise ToolFailure(
            f"path {relative!r} leaves the workspace",
            "use a relative path",
            ToolErrorKind.INVALID_ARGUMENTS,
        )
    return candidate


@tool(tier="read", timeout_s=5.0)
def read_file(path: str, context: ToolContext) -> str:
    """Read a UTF-8 text file from the shared workspace, by its path relative to the root."""
    target = resolve_in_workspace(context.workspace, path)
    if not target.is_file():
        raise ToolFailure(f"no file at {path!r}", "call list_files to see which files exist")
    if target.stat().st_size > MAX_FILE_BYTES:
        raise ToolFailure(f"{path!r} is larger than {MAX_FILE_BYTES} bytes", "read a smaller file")
    return target.read_text(encoding="utf-8", errors="replace")


@tool(tier="read", timeout_s=5.0)
def list_files(context: ToolContext, path: str = ".") -> list[str]:
    """List the files under a directory of the shared workspace (recursively, relative paths)."""
    root = context.workspace.resolve()
    base = root if path in {"", "."} else resolve_in_workspace(root, path)
    if not base.exists():
        return []
    if not base.is_dir():
        raise ToolFailure(f"{path!r} is a file, not a directory", "call read_file on it instead")
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            found.append(str((Path(dirpath) / filename).relative_to(root).as_posix()))
            if len(found) >= MAX_LIST_ENTRIES:
                return found
    return found


APPLIED_DIR = ".hivebus/applied"
"""Markers of applied write calls (by idempotency key), inside the workspace."""


def applied_marker(root: Path, idempotency_key: str) -> Path:
    """Where the marker of one applied call lives: replaying that call is then a no-op."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return root.resolve() / APPLIED_DIR / digest[:2] / digest


@tool(tier="write_safe", timeout_s=5.0)
def write_file(path: str, content: str, context: ToolContext) -> dict[str, object]:
    """Create or replace a UTF-8 text file in the shared workspace; returns its path and size."""
    marker = applied_marker(context.workspace, context.idempotency_key)
    if marker.exists():  # a resumed run replaying a call it already made
        return {"path": path, "bytes": len(content.encode("utf-8")), "replayed": True}
    data = content.encode("utf-8")
    if len(data) > MAX_FILE_BYTES:
        raise ToolFailure(
            f"content is {len(data)} bytes; the limit is {MAX_FILE_BYTES}",
            "split the content over several files",
            ToolErrorKind.INVALID_ARGUMENTS,
        )
    target = resolve_in_workspace(context.workspace, path)
    if target == context.workspace.resolve() or target.is_dir():
        raise ToolFailure(
            f"{path!r} is a directory",
            "give a file path such as 'notes/summary.md'",
            ToolErrorKind.INVALID_ARGUMENTS,
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary file beside the target and rename, so a reader never sees half a file.
    tmp = target.parent / f".{target.name}.{context.run_id}.tmp"
    try:
        tmp.write_bytes(data)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(path, encoding="utf-8")
    return {"path": path, "bytes": len(data)}
