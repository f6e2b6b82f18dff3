"""Search: finds the notes that contain the query, densest first, with a snippet at the match."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hivebus.knowledge.notes import Note, NoteMeta, render_note
from hivebus.knowledge.search import SNIPPET_CHARS, SearchHit, query_terms, search_notes


def note(title: str, body: str, tags: list[str] | None = None) -> str:
    """The text of a note with front matter, as the store keeps it."""
    meta = NoteMeta(title=title, tags=tags or [], author="writer/run1")
    return render_note(Note(meta=meta, body=body))


FILLER = "The service keeps a queue of pending work and reports progress to the console. " * 8

NOTES = [
    ("shared/raft.md", note("Consensus", "Raft elects a leader. Raft logs replicate. Raft.\n")),
    ("shared/long.md", note("Operations", FILLER + "\nWe once read about raft.\n" + FILLER)),
    ("tasks/t1/cache.md", note("Cache design", "Entries expire after ten minutes.\n", ["lru"])),
    ("shared/plain.md", "# Plain notes\n\nNo front matter, but about caching and raft.\n"),
]


def test_search_finds_the_notes_that_contain_the_term() -> None:
    """Every note containing the term is found, and no other."""
    hits = search_notes(NOTES, "raft")
    assert {hit.path for hit in hits} == {"shared/raft.md", "shared/long.md", "shared/plain.md"}
    assert all(isinstance(hit, SearchHit) and hit.score > 0 for hit in hits)


def test_the_denser_note_ranks_first() -> None:
    """A short note that keeps mentioning the term beats a long one that mentions it once."""
    hits = search_notes(NOTES, "raft")
    assert hits[0].path == "shared/raft.md"
    assert hits[-1].path == "shared/long.md"
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


def test_snippets_contain_the_match_on_one_line() -> None:
    """A snippet is at most 160 characters, without line breaks, and keeps the matched word."""
    for hit in search_notes(NOTES, "RAFT"):
        assert "raft" in hit.snippet.lower()
        assert "\n" not in hit.snippet
        assert len(hit.snippet) <= SNIPPET_CHARS


def test_a_match_deep_in_a_long_note_is_in_its_snippet() -> None:
    """The snippet window moves to the first match even when it is far into the note."""
    (hit,) = search_notes([("a.md", note("A", FILLER * 5 + "the zeppelin landed\n"))], "zeppelin")
    assert "zeppelin" in hit.snippet
    assert len(hit.snippet) <= SNIPPET_CHARS


def test_title_and_tags_count() -> None:
    """A word only in the title or the tags still finds the note; the title weighs more."""
    assert [h.path for h in search_notes(NOTES, "lru")] == ["tasks/t1/cache.md"]
    titled = ("b.md", note("Zeppelins", "Nothing here.\n"))
    mentioned = ("a.md", note("Other", "One zeppelins mention.\n"))
    assert [h.path for h in search_notes([mentioned, titled], "zeppelins")] == ["b.md", "a.md"]
    assert search_notes([titled], "zeppelins")[0].title == "Zeppelins"


def test_notes_with_every_term_rank_above_notes_with_some() -> None:
    """All query terms in one note earn a bonus over a note repeating only one of them."""
    both = ("z.md", note("Z", "cache and raft\n"))
    one = ("a.md", note("A", "cache cache cache\n"))
    assert [h.path for h in search_notes([one, both], "cache raft")] == ["z.md", "a.md"]


def test_ties_are_broken_by_path_and_limit_is_kept() -> None:
    """Equal scores come back in path order, and no more than `limit` hits are returned."""
    same = note("T", "raft\n")
    notes = [(f"n/{name}.md", same) for name in ("c", "a", "b")]
    assert [h.path for h in search_notes(notes, "raft")] == ["n/a.md", "n/b.md", "n/c.md"]
    assert [h.path for h in search_notes(notes, "raft", limit=2)] == ["n/a.md", "n/b.md"]
    assert search_notes(notes, "raft", limit=0) == []


def test_empty_and_one_letter_queries_find_nothing() -> None:
    """A query without a term of two or more word characters has no hits."""
    for query in ("", "   ", "a", "a b ?", "--- !!"):
        assert search_notes(NOTES, query) == []
    assert query_terms("Raft, raft and a CACHE") == ["raft", "and", "cache"]


def test_a_note_with_broken_front_matter_is_still_searched() -> None:
    """A note whose YAML is broken is searched as raw text under its file name."""
    (hit,) = search_notes([("shared/bad.md", "---\ntitle: [\n---\n\nraft here\n")], "raft")
    assert hit.title == "bad"
    assert "raft" in hit.snippet


@settings(max_examples=100, deadline=None)
@given(
    word=st.from_regex(r"[a-z]{3,12}", fullmatch=True),
    filler=st.lists(st.from_regex(r"[0-9]{1,9}", fullmatch=True), max_size=200),
    position=st.integers(min_value=0),
)
def test_a_written_word_is_always_found(word: str, filler: list[str], position: int) -> None:
    """A word written anywhere in a note is found, and shown in the snippet."""
    words = [*filler]
    words.insert(position % (len(words) + 1), word)
    other = ("other.md", note("Other", " ".join(filler)))
    (hit,) = search_notes([other, ("target.md", note("T", "\n".join(words)))], word)
    assert hit.path == "target.md"
    assert word in hit.snippet
