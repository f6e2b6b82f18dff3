"""Note paths: `[a-z0-9_-]` segments ending in `.md`, inside the store, never through a link."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hivebus.contracts.ids import ID_PATTERN
from hivebus.contracts.knowledge import task_folder
from hivebus.knowledge.errors import InvalidPathError, KnowledgeError
from hivebus.knowledge.paths import (
    MAX_PATH_CHARS,
    MAX_PATH_LEVELS,
    NOTE_PATH_PATTERN,
    SHARED,
    resolve_in_repo,
    validate_note_path,
)

HYPOTHESIS = settings(max_examples=300, deadline=None)

HOSTILE = [
    "",
    ".md",
    "../x.md",
    "a/../../x.md",
    "..",
    "./a.md",
    "a/./b.md",
    "a//b.md",
    "a/",
    "/etc/passwd.md",
    "//server/share.md",
    "-x.md",
    "--help.md",
    "a/--upload-pack=evil.md",
    "_x.md",
    "a\nb.md",
    "a.md\n",
    "a\r.md",
    "a\tb.md",
    "a b.md",
    "a.md ",
    ".git/config",
    ".git/hooks/pre-commit.md",
    ".gitignore.md",
    "a\\b.md",
    "..\\x.md",
    "a\x00.md",
    "a.md\x00.txt",
    "\uff41.md",
    "\uff21\uff22\uff23.md",
    "\uff41/b.md",
    "\u0430.md",
    "a\u200b.md",
    "a\u2028.md",
    "A.md",
    "a.MD",
    "a.txt",
    "a.md.md",
    "a.b.md",
    "notes/README",
    "x" * MAX_PATH_CHARS + ".md",
    "/".join(["a"] * (MAX_PATH_LEVELS + 1)) + ".md",
]
"""Paths no store may accept, one per trick."""

SEGMENT = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)
VALID = st.lists(SEGMENT, min_size=1, max_size=4).map(lambda parts: "/".join(parts) + ".md")


def _break_segment(segment: str, trick: int) -> str:
    """Turn a valid segment into one the pattern cannot accept."""
    tricks = [
        "..",
        ".",
        "",
        "-" + segment,
        "--" + segment,
        segment + "\n",
        segment + "\x00",
        segment.upper(),
        "\uff41" + segment,
        segment + "\u0430",
        segment + "\\" + segment,
        segment + " ",
        ".git",
        segment + ".",
    ]
    return tricks[trick % len(tricks)]


@st.composite
def hostile_paths(draw: st.DrawFn) -> str:
    """A valid path with one segment or the whole path made hostile."""
    parts = draw(st.lists(SEGMENT, min_size=1, max_size=4))
    whole = draw(st.integers(min_value=0, max_value=6))
    valid = "/".join(parts) + ".md"
    if whole == 1:
        return "/" + valid
    if whole == 2:
        return valid + draw(st.sampled_from(["\n", "\x00", " ", "/", "\\", ".txt"]))
    if whole == 3:
        return (valid[:-3] + "x") * (MAX_PATH_CHARS // (len(valid) - 2) + 1) + ".md"
    if whole == 4:
        return ".git/" + valid
    if whole == 5:
        return draw(st.sampled_from(HOSTILE))
    index = draw(st.integers(min_value=0, max_value=len(parts) - 1))
    parts[index] = _break_segment(parts[index], draw(st.integers(min_value=0)))
    return "/".join(parts) + ".md"


@pytest.mark.parametrize("path", HOSTILE)
def test_known_tricks_are_rejected_with_a_reason(path: str) -> None:
    """Each known trick is refused by validation, with a reason and a hint of a good path."""
    with pytest.raises(InvalidPathError) as caught:
        validate_note_path(path)
    assert caught.value.reason
    assert "shared/design-notes.md" in str(caught.value)
    assert isinstance(caught.value, KnowledgeError)
    assert not caught.value.retryable


@HYPOTHESIS
@given(path=hostile_paths())
def test_generated_hostile_paths_are_rejected(path: str) -> None:
    """Traversal, absolute, option-like, control, look-alike and oversized paths are all refused."""
    with tempfile.TemporaryDirectory() as tmp:
        for check in (validate_note_path, lambda p: resolve_in_repo(Path(tmp), p)):
            with pytest.raises(InvalidPathError) as caught:
                check(path)
            assert caught.value.reason.strip()
        assert not any(Path(tmp).iterdir())


@HYPOTHESIS
@given(
    path=st.one_of(
        st.text(alphabet="ab09_-/.\\\n\x00 A\uff41\u0430", max_size=30).map(lambda p: p + ".md"),
        st.text(max_size=40),
        VALID,
    )
)
def test_anything_accepted_matches_the_pattern_and_stays_inside(path: str) -> None:
    """A path is refused with a reason, or matches the pattern and resolves inside the root."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        root.mkdir()
        try:
            accepted = validate_note_path(path)
        except InvalidPathError as exc:
            reason = exc.reason
        else:
            reason = ""
        if reason:
            assert reason.strip()
            return
        assert accepted == path
        assert re.fullmatch(NOTE_PATH_PATTERN, accepted)
        assert len(accepted) <= MAX_PATH_CHARS
        assert not accepted.startswith((".git", "-", "/"))
        target = resolve_in_repo(root, accepted)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("note", encoding="utf-8")
        assert target.resolve().is_relative_to(root.resolve())
        assert list(Path(tmp).iterdir()) == [root]


def test_limits_are_inclusive() -> None:
    """A path of exactly the longest length and the deepest level is accepted; one more is not."""
    longest = "x" * (MAX_PATH_CHARS - 3) + ".md"
    deepest = "/".join(["a"] * MAX_PATH_LEVELS) + ".md"
    assert validate_note_path(longest) == longest
    assert validate_note_path(deepest) == deepest
    with pytest.raises(InvalidPathError, match="longer"):
        validate_note_path("x" + longest)
    with pytest.raises(InvalidPathError, match="deeper"):
        validate_note_path("a/" + deepest)


def test_reasons_name_the_trick() -> None:
    """The reason says which rule a path broke, so a model can fix that one thing."""
    expected = {
        "/etc/x.md": "absolute",
        "a/../x.md": "'..'",
        "-x.md": "may not start with '-'",
        "a\nb.md": "line breaks",
        "\uff41.md": "ASCII",
        "A.md": "upper-case",
        ".git/config": ".git",
        "a\\b.md": "backslashes",
        "a\x00.md": "NUL",
        "a//b.md": "empty segments",
        "a.txt": "'.md'",
    }
    for path, words in expected.items():
        with pytest.raises(InvalidPathError) as caught:
            validate_note_path(path)
        assert words in caught.value.reason, (path, caught.value.reason)


def test_symlinked_folder_pointing_outside_is_refused(tmp_path: Path) -> None:
    """A real symbolic link inside the repository that points outside it is never followed."""
    repo = tmp_path / "repo"
    outside = tmp_path / "outside"
    repo.mkdir()
    outside.mkdir()
    (outside / "secret.md").write_text("secret", encoding="utf-8")
    (repo / "notes").symlink_to(outside, target_is_directory=True)
    (repo / "leak.md").symlink_to(outside / "secret.md")
    for path in ("notes/secret.md", "notes/new.md", "leak.md"):
        with pytest.raises(InvalidPathError, match="symbolic link"):
            resolve_in_repo(repo, path)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.md"]


def test_ordinary_paths_resolve_under_the_root(tmp_path: Path) -> None:
    """A valid path maps to the file of that name under the root, whether or not it exists yet."""
    (tmp_path / SHARED).mkdir()
    assert resolve_in_repo(tmp_path, "shared/a.md") == tmp_path.resolve() / "shared" / "a.md"
    assert resolve_in_repo(tmp_path, "new/deep/b.md") == tmp_path.resolve() / "new/deep/b.md"


@given(task_id=st.from_regex(ID_PATTERN, fullmatch=True))
def test_every_task_id_gives_a_valid_folder(task_id: str) -> None:
    """Any id the contracts accept gives a task folder in which notes are valid paths."""
    folder = task_folder(task_id)
    top, shard, name = folder.split("/")
    assert (top, name) == ("tasks", task_id.lower())
    assert len(shard) == 2
    assert all(c in "0123456789abcdef" for c in shard)
    assert validate_note_path(folder + "/summary.md")
    assert validate_note_path(folder + "/outputs/" + "s" * 64 + ".md")


def test_task_folders_spread_over_256_shards() -> None:
    """Ids that share a prefix (as generated ones do) land in many shards, stably."""
    shards = {task_folder(f"bench-{i:06d}").split("/")[1] for i in range(4000)}
    assert len(shards) == 256
    assert task_folder("Sum-Task") == task_folder("sum-task") == "tasks/24/sum-task"
