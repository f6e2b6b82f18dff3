"""Workspace file tools: a model can read, list and write only inside the workspace directory."""

from __future__ import annotations

import string
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hivebus.agent.tool import ToolContext
from hivebus.agent.toolbox import Toolbox
from hivebus.agent.tools import workspace as workspace_tools
from hivebus.agent.tools.workspace import MAX_FILE_BYTES, list_files, read_file, write_file
from hivebus.contracts import Tier, ToolErrorKind, ToolResult

TOOLBOX = Toolbox([read_file, list_files, write_file], list(Tier))
REFUSED = {ToolErrorKind.INVALID_ARGUMENTS, ToolErrorKind.DENIED}
HYPOTHESIS = settings(max_examples=150, deadline=None)


def context_for(workspace: Path) -> ToolContext:
    """A tool context for one call in `workspace`."""
    return ToolContext(
        workspace=workspace,
        task_id="task-1",
        subtask_id="sub-1",
        run_id="run1",
        step=1,
        idempotency_key="run1:1:call_1",
    )


def snapshot(root: Path) -> dict[str, object]:
    """Every entry under `root` (links not followed): files with bytes, links with targets."""
    found: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[key] = ("link", str(path.readlink()))
        elif path.is_file():
            found[key] = ("file", path.read_bytes())
        else:
            found[key] = ("dir", None)
    return found


@dataclass
class Sandbox:
    """A temporary directory holding a workspace, secrets outside it, and links pointing out."""

    outer: Path
    workspace: Path

    @property
    def context(self) -> ToolContext:
        """The tool context of the sandbox's workspace."""
        return context_for(self.workspace)


@contextmanager
def sandbox() -> Iterator[Sandbox]:
    """Build a fresh sandbox: `outer/{secret.txt, secrets/, workspace/{docs/, links...}}`."""
    with tempfile.TemporaryDirectory() as tmp:
        outer = Path(tmp).resolve()
        (outer / "secret.txt").write_text("outside", encoding="utf-8")
        (outer / "secrets").mkdir()
        (outer / "secrets" / "key.txt").write_text("hunter2", encoding="utf-8")
        workspace = outer / "workspace"
        (workspace / "docs").mkdir(parents=True)
        (workspace / "docs" / "a.md").write_text("inside", encoding="utf-8")
        (workspace / "out_dir").symlink_to(outer / "secrets", target_is_directory=True)
        (workspace / "out_file").symlink_to(outer / "secret.txt")
        (workspace / "docs" / "up").symlink_to(outer, target_is_directory=True)
        (workspace / "dangling").symlink_to(outer / "not-yet-there.txt")
        yield Sandbox(outer=outer, workspace=workspace)


def assert_refused(result: ToolResult) -> None:
    """The call came back as a structured refusal, not as data."""
    assert not result.ok
    assert result.error is not None
    assert result.error.kind in REFUSED, result.error
    assert result.error.suggestion


# --- ordinary use -----------------------------------------------------------------------------


async def test_write_read_list_round_trip(tool_context: ToolContext, workspace: Path) -> None:
    """A written file can be read back and is listed by its relative path."""
    text = "# Notes\nnaïve café ☕\n"
    written = await TOOLBOX.call(
        "write_file", {"path": "notes/a.md", "content": text}, tool_context
    )
    assert written.ok
    assert written.data == {"path": "notes/a.md", "bytes": len(text.encode("utf-8"))}
    assert (workspace / "notes" / "a.md").read_text(encoding="utf-8") == text

    read = await TOOLBOX.call("read_file", {"path": "notes/a.md"}, tool_context)
    assert read.ok
    assert read.data == text

    second_call = replace(tool_context, step=3, idempotency_key="run1:3:call_2")
    await TOOLBOX.call("write_file", {"path": "b.md", "content": ""}, second_call)
    listed = await TOOLBOX.call("list_files", {}, tool_context)
    assert listed.data == ["b.md", "notes/a.md"]
    under = await TOOLBOX.call("list_files", {"path": "notes"}, tool_context)
    assert under.data == ["notes/a.md"]


async def test_write_replaces_a_file_and_leaves_no_temporary_file(
    tool_context: ToolContext, workspace: Path
) -> None:
    """Writing a path twice keeps the second content, and no temporary file is left behind."""
    for step, content in enumerate(("first", "second"), start=2):
        call = replace(tool_context, step=step, idempotency_key=f"run1:{step}:call")
        result = await TOOLBOX.call("write_file", {"path": "a.md", "content": content}, call)
        assert result.ok
    assert (workspace / "a.md").read_text(encoding="utf-8") == "second"
    assert [p for p in snapshot(workspace) if not p.startswith(".hivebus")] == ["a.md"]


async def test_a_replayed_write_is_a_no_op(tool_context: ToolContext, workspace: Path) -> None:
    """The same call replayed (same idempotency key, as after a crash) changes nothing."""
    first = await TOOLBOX.call("write_file", {"path": "a.md", "content": "v1"}, tool_context)
    (workspace / "a.md").write_text("changed by a later step", encoding="utf-8")
    again = await TOOLBOX.call("write_file", {"path": "a.md", "content": "v1"}, tool_context)
    assert first.ok
    assert again.ok
    assert again.data["replayed"] is True
    assert (workspace / "a.md").read_text(encoding="utf-8") == "changed by a later step"


async def test_backslashes_are_directory_separators(
    tool_context: ToolContext, workspace: Path
) -> None:
    """A Windows-style relative path lands in the same place as its forward-slash form."""
    result = await TOOLBOX.call("write_file", {"path": "notes\\b.md", "content": "x"}, tool_context)
    assert result.ok
    assert (workspace / "notes" / "b.md").read_text(encoding="utf-8") == "x"


async def test_reading_a_missing_file_suggests_listing(tool_context: ToolContext) -> None:
    """Reading a file that does not exist is an error that points the model at `list_files`."""
    result = await TOOLBOX.call("read_file", {"path": "missing.md"}, tool_context)
    assert result.error is not None
    assert "no file at 'missing.md'" in result.error.message
    assert "list_files" in result.error.suggestion


async def test_listing_a_file_or_a_missing_directory(
    tool_context: ToolContext, workspace: Path
) -> None:
    """Listing a file is an error that suggests `read_file`; a missing directory lists nothing."""
    (workspace / "a.md").write_text("x", encoding="utf-8")
    on_file = await TOOLBOX.call("list_files", {"path": "a.md"}, tool_context)
    assert on_file.error is not None
    assert "read_file" in on_file.error.suggestion
    missing = await TOOLBOX.call("list_files", {"path": "nowhere"}, tool_context)
    assert missing.ok
    assert missing.data == []


async def test_listing_skips_hidden_directories_and_does_not_follow_links() -> None:
    """Hidden directories are not listed and linked directories are not descended into."""
    with sandbox() as box:
        (box.workspace / ".git").mkdir()
        (box.workspace / ".git" / "HEAD").write_text("ref", encoding="utf-8")
        result = await TOOLBOX.call("list_files", {}, box.context)
    assert result.ok
    assert "docs/a.md" in result.data
    assert not [p for p in result.data if p.startswith(".git") or "key.txt" in p]


# --- size limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    ["x" * (MAX_FILE_BYTES + 1), "é" * (MAX_FILE_BYTES // 2 + 1)],
    ids=["ascii", "multibyte-counts-bytes"],
)
async def test_write_over_the_size_limit_is_refused(
    tool_context: ToolContext, workspace: Path, content: str
) -> None:
    """Content over the byte limit is `invalid_arguments` and nothing is written."""
    result = await TOOLBOX.call("write_file", {"path": "big.md", "content": content}, tool_context)
    assert result.error is not None
    assert result.error.kind is ToolErrorKind.INVALID_ARGUMENTS
    assert str(MAX_FILE_BYTES) in result.error.message
    assert snapshot(workspace) == {}


async def test_write_at_the_size_limit_is_accepted(
    tool_context: ToolContext, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Content of exactly the limit is written (the limit is inclusive)."""
    monkeypatch.setattr(workspace_tools, "MAX_FILE_BYTES", 8)
    result = await TOOLBOX.call("write_file", {"path": "a.md", "content": "12345678"}, tool_context)
    assert result.ok
    assert (workspace / "a.md").read_bytes() == b"12345678"


async def test_reading_a_file_over_the_size_limit_is_refused(
    tool_context: ToolContext, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file larger than the limit is not read into the conversation."""
    monkeypatch.setattr(workspace_tools, "MAX_FILE_BYTES", 8)
    (workspace / "big.md").write_bytes(b"123456789")
    result = await TOOLBOX.call("read_file", {"path": "big.md"}, tool_context)
    assert result.error is not None
    assert "larger than 8 bytes" in result.error.message


# --- hostile paths ----------------------------------------------------------------------------

SEGMENT = st.text(alphabet=string.ascii_lowercase + string.digits + "_-.", min_size=1, max_size=6)
SEPARATOR = st.sampled_from(["/", "\\", "//", "/./", "\\.\\", "/\\"])


@st.composite
def traversal(draw: st.DrawFn) -> str:
    """A relative path with at least one `..` component, in assorted separator styles."""
    parts = draw(st.lists(SEGMENT | st.just("..") | st.just("."), min_size=0, max_size=4))
    at = draw(st.integers(min_value=0, max_value=len(parts)))
    parts.insert(at, "..")
    path = parts[0]
    for part in parts[1:]:
        path += draw(SEPARATOR) + part
    prefix = draw(st.sampled_from(["", "./", ".\\"]))
    suffix = draw(st.sampled_from(["", "/", "\\"]))
    return prefix + path + suffix


@st.composite
def absolute(draw: st.DrawFn) -> str:
    """An absolute path: a POSIX root, a doubled root, or a backslash root."""
    root = draw(st.sampled_from(["/", "//", "\\", "\\\\", "/etc/", "/home/"]))
    return root + draw(SEGMENT.filter(lambda s: ".." not in s))


@st.composite
def with_nul(draw: st.DrawFn) -> str:
    """A path with a NUL byte somewhere in it."""
    base = draw(st.text(alphabet=string.ascii_lowercase + "/.", max_size=10))
    at = draw(st.integers(min_value=0, max_value=len(base)))
    return base[:at] + "\x00" + base[at:]


@st.composite
def through_link(draw: st.DrawFn) -> str:
    """A path through one of the sandbox's links that point outside the workspace."""
    link = draw(st.sampled_from(["out_dir", "out_file", "docs/up", "dangling", "docs\\up"]))
    rest = draw(st.sampled_from(["", "/key.txt", "/new.md", "/secrets/key.txt", "/x/y.md"]))
    return link + rest


HOSTILE = traversal() | absolute() | with_nul() | through_link() | st.just("")


@HYPOTHESIS
@given(path=HOSTILE, content=st.text(max_size=20))
async def test_hostile_write_paths_are_refused_and_nothing_changes(path: str, content: str) -> None:
    """`write_file` refuses every hostile path with a structured error and changes no file."""
    with sandbox() as box:
        before = snapshot(box.outer)
        result = await TOOLBOX.call("write_file", {"path": path, "content": content}, box.context)
        assert_refused(result)
        assert snapshot(box.outer) == before


@HYPOTHESIS
@given(path=HOSTILE)
async def test_hostile_read_paths_are_refused(path: str) -> None:
    """`read_file` refuses every hostile path, so nothing outside the workspace is ever returned."""
    with sandbox() as box:
        result = await TOOLBOX.call("read_file", {"path": path}, box.context)
        assert_refused(result)
        assert result.data is None


@HYPOTHESIS
@given(path=HOSTILE.filter(bool))
async def test_hostile_list_paths_are_refused(path: str) -> None:
    """`list_files` refuses every hostile directory path (an empty one means the root)."""
    with sandbox() as box:
        result = await TOOLBOX.call("list_files", {"path": path}, box.context)
        assert_refused(result)


ANY_PATH = st.lists(
    st.sampled_from(["..", ".", "/", "\\", "docs", "out_dir", "docs/up", "a.md", "\x00"])
    | st.text(max_size=4),
    max_size=6,
).map("".join)


def names_the_root(path: str) -> bool:
    """Whether a path normalises to the workspace root itself (pinned by a test below)."""
    return PurePosixPath(path.replace("\\", "/")).parts == ()


@HYPOTHESIS
@given(path=ANY_PATH.filter(lambda p: not names_the_root(p)))
async def test_no_write_path_changes_anything_outside_the_workspace(path: str) -> None:
    """Whatever path a model sends, `write_file` never changes a file outside the workspace."""
    with sandbox() as box:
        outside = {k: v for k, v in snapshot(box.outer).items() if not k.startswith("workspace")}
        result = await TOOLBOX.call("write_file", {"path": path, "content": "x"}, box.context)
        after = {k: v for k, v in snapshot(box.outer).items() if not k.startswith("workspace")}
        assert after == outside, result


@pytest.mark.parametrize("path", [".", "./", "./."])
async def test_write_to_the_workspace_root_writes_nothing_outside(path: str) -> None:
    """Writing to a path that names the workspace root is refused without touching its parent."""
    with sandbox() as box:
        before = snapshot(box.outer)
        result = await TOOLBOX.call("write_file", {"path": path, "content": "x"}, box.context)
        assert not result.ok
        assert snapshot(box.outer) == before


async def test_write_onto_a_directory_is_refused_and_leaves_nothing_behind() -> None:
    """Writing to a path that is an existing directory fails without leaving a temporary file."""
    with sandbox() as box:
        before = snapshot(box.outer)
        result = await TOOLBOX.call("write_file", {"path": "docs", "content": "x"}, box.context)
        assert not result.ok
        assert snapshot(box.outer) == before
