"""Working-tree files: written atomically, folders made as needed, never through a link."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hivebus.knowledge.worktree import TEMP_SUFFIX, UnsafePathError, write_file


def test_a_note_in_new_folders_is_written_with_its_folders(tmp_path: Path) -> None:
    """Every missing folder on the way is made; the file holds the bytes; no temporary is left."""
    checked: set[Path] = set()
    write_file(tmp_path, "tasks/aa/t1/summary.md", b"one\n", checked)
    write_file(tmp_path, "tasks/aa/t2/summary.md", b"two\n", checked)
    assert (tmp_path / "tasks/aa/t1/summary.md").read_bytes() == b"one\n"
    assert (tmp_path / "tasks/aa/t2/summary.md").read_bytes() == b"two\n"
    assert {tmp_path / "tasks", tmp_path / "tasks/aa", tmp_path / "tasks/aa/t1"} <= checked
    assert not list(tmp_path.rglob(f"*{TEMP_SUFFIX}"))


def test_a_file_is_replaced_whole_and_stays_private(tmp_path: Path) -> None:
    """Writing again replaces the bytes (a new inode: readers never see half a note)."""
    write_file(tmp_path, "shared/a.md", b"a much longer first version\n")
    inode = (tmp_path / "shared/a.md").stat().st_ino
    write_file(tmp_path, "shared/a.md", b"short\n")
    written = tmp_path / "shared/a.md"
    assert written.read_bytes() == b"short\n"
    assert written.stat().st_ino != inode
    assert stat.S_IMODE(written.stat().st_mode) & 0o077 == 0


@pytest.mark.parametrize("link", ["shared", "shared/a.md"])
def test_nothing_is_written_through_a_symbolic_link(tmp_path: Path, link: str) -> None:
    """A folder or the file itself that is a link is refused, and the link's target untouched."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "shared").mkdir(parents=True)
    outside.mkdir()
    (root / link).rmdir() if (root / link).is_dir() else None
    (root / link).symlink_to(outside if link == "shared" else outside / "a.md")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        write_file(root, "shared/a.md", b"x\n")
    assert list(outside.iterdir()) == []
    assert not list(root.rglob(f"*{TEMP_SUFFIX}"))


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    """A folder where the file should be: the rename fails, and its temporary file is removed."""
    (tmp_path / "shared/a.md").mkdir(parents=True)
    (tmp_path / "shared/a.md/inside").write_text("x")
    with pytest.raises(OSError):  # noqa: PT011 - the kernel's error for renaming over a folder
        write_file(tmp_path, "shared/a.md", b"x\n")
    assert [p.name for p in (tmp_path / "shared").iterdir()] == ["a.md"]
