"""Notes: rendered with YAML front matter and parsed back unchanged; broken notes are refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hivebus.knowledge.errors import InvalidNoteError, NoteTooLargeError
from hivebus.knowledge.notes import (
    MAX_NOTE_BYTES,
    UNKNOWN_AUTHOR,
    UNKNOWN_TIME,
    Note,
    NoteMeta,
    check_note_size,
    parse_note,
    render_note,
)

WHEN = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)


def make_note(body: str = "# Cache\n\nWe cache.\n", **meta: object) -> Note:
    """A note with sensible front matter, overridden by `meta`."""
    fields: dict[str, object] = {
        "title": "Cache design",
        "tags": ["cache", "design"],
        "task": "task-1",
        "subtask": "sub-1",
        "author": "writer/run1",
        "updated": WHEN,
        **meta,
    }
    return Note(meta=NoteMeta.model_validate(fields), body=body)


def test_render_puts_front_matter_then_a_blank_line_then_the_body() -> None:
    """A rendered note is `---`, YAML, `---`, an empty line and the body verbatim."""
    text = render_note(make_note())
    assert text.startswith("---\ntitle: Cache design\n")
    assert text.endswith("---\n\n# Cache\n\nWe cache.\n")
    assert "author: writer/run1\n" in text


NOTES = st.builds(
    Note,
    meta=st.builds(
        NoteMeta,
        title=st.text(max_size=80),
        tags=st.lists(st.text(max_size=20), max_size=5),
        task=st.none() | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True),
        subtask=st.none() | st.text(max_size=20),
        author=st.text(min_size=1, max_size=30),
        updated=st.datetimes(timezones=st.just(UTC)),
    ),
    body=st.text(max_size=400),
)
"""Notes with any text in title, tags and body: line breaks, '---', YAML syntax, Unicode."""


@settings(max_examples=300, deadline=None)
@given(note=NOTES)
def test_render_then_parse_gives_the_same_note(note: Note) -> None:
    """Any title, tags and body (line breaks, '---', YAML syntax, Unicode) survive a round trip."""
    assert parse_note(render_note(note)) == note


@pytest.mark.parametrize("body", ["---\nnot: front matter\n---\n", "\n\nleading lines", ""])
def test_bodies_that_look_like_front_matter_survive(body: str) -> None:
    """A body starting with '---' or blank lines is kept as written, not read as front matter."""
    note = make_note(body)
    assert parse_note(render_note(note)).body == body


def test_a_note_without_front_matter_takes_its_title_from_the_first_heading() -> None:
    """A hand-written Markdown file is a note titled by its first `# ` heading."""
    note = parse_note("Intro line\n\n# Release plan #\n\n## Later\n", "shared/plan.md")
    assert note.meta.title == "Release plan"
    assert note.meta.author == UNKNOWN_AUTHOR
    assert note.meta.updated == UNKNOWN_TIME
    assert note.body == "Intro line\n\n# Release plan #\n\n## Later\n"


def test_a_note_without_heading_is_titled_by_its_file_name() -> None:
    """Without front matter or a heading, the title is the path's stem."""
    assert parse_note("just text\n", "tasks/t1/summary.md").meta.title == "summary"


def test_front_matter_without_title_falls_back_to_the_heading() -> None:
    """A person's front matter may omit the title; the heading of the body supplies it."""
    note = parse_note("---\ntags: [a]\n---\n\n# From heading\n", "x.md")
    assert note.meta.title == "From heading"
    assert note.meta.tags == ["a"]


def test_unknown_front_matter_fields_are_ignored() -> None:
    """Fields the store does not know (added by people or other tools) do not break reading."""
    note = parse_note("---\ntitle: T\nstatus: draft\n---\n\nbody")
    assert note.meta.title == "T"
    assert note.body == "body"


def test_crlf_front_matter_is_read() -> None:
    """A note saved with Windows line endings still has its front matter read."""
    note = parse_note("---\r\ntitle: T\r\n---\r\n\r\nbody\r\n")
    assert note.meta.title == "T"
    assert note.body == "body\r\n"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("---\ntitle: [unclosed\n---\n\nbody", "not valid YAML"),
        ("---\ntitle: a: b: c\n---\n", "not valid YAML"),
        ("---\ntitle: T\nbody without end\n", "no closing"),
        ("---\n- a\n- b\n---\n", "not a mapping"),
        ("---\ntitle: T\ntags: 5\n---\n", "tags"),
        ("---\ntitle: T\nupdated: someday\n---\n", "updated"),
    ],
)
def test_broken_front_matter_is_refused_with_a_reason(text: str, reason: str) -> None:
    """Broken YAML, unclosed or non-mapping front matter and wrong types raise InvalidNoteError."""
    with pytest.raises(InvalidNoteError) as caught:
        parse_note(text)
    assert reason in caught.value.reason
    assert "front matter" in str(caught.value)


def test_size_limit_counts_bytes_not_characters() -> None:
    """A note is measured in UTF-8 bytes, so multi-byte text reaches the limit sooner."""
    assert check_note_size("a" * MAX_NOTE_BYTES) == MAX_NOTE_BYTES
    with pytest.raises(NoteTooLargeError) as caught:
        check_note_size("é" * (MAX_NOTE_BYTES // 2 + 1))
    assert caught.value.size == MAX_NOTE_BYTES + 2
    assert caught.value.limit == MAX_NOTE_BYTES
    assert "split it" in str(caught.value)
    assert not caught.value.retryable
