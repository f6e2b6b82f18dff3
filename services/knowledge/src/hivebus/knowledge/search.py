"""Full-text search over notes: ranked hits with a snippet around the first match.

Pure and in memory: the caller hands over `(path, text)` pairs (the store reads them from its
working tree) and gets the best hits back. Good enough for thousands of notes; no index to keep
consistent with the repository.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from hivebus.knowledge.errors import InvalidNoteError
from hivebus.knowledge.notes import parse_note

TITLE_BOOST = 3.0
"""Added for each query term that occurs in a note's title."""

ALL_TERMS_BONUS = 2.0
"""Added when every query term occurs somewhere in the note."""

SNIPPET_CHARS = 160
"""Longest snippet, in characters."""

_SNIPPET_LEAD = 60
"""Characters of context kept before the first match, when there are that many."""

_WORD_RE = re.compile(r"\w+")
_SPACE_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class SearchHit:
    """One note that matches a query."""

    path: str
    """Note path, as given."""
    title: str
    """The note's title (front matter, first heading or file name)."""
    score: float
    """Higher is better; only comparable between hits of one query."""
    snippet: str
    """Up to `SNIPPET_CHARS` characters of the body around the first match, on one line."""


def query_terms(query: str) -> list[str]:
    """Split a query into distinct lower-case terms, dropping one-character ones."""
    terms = [t for t in _WORD_RE.findall(query.lower()) if len(t) > 1]
    return list(dict.fromkeys(terms))


def _snippet(body: str, terms: list[str]) -> str:
    """Return up to `SNIPPET_CHARS` of `body` around the earliest match, whitespace collapsed."""
    flat = _SPACE_RE.sub(" ", body).strip()
    starts = [
        m.start()
        for term in terms
        if (m := re.search(rf"(?<!\w){re.escape(term)}(?!\w)", flat, re.IGNORECASE))
    ]
    if not starts:
        return flat[:SNIPPET_CHARS]
    first = min(starts)
    begin = max(0, min(first - _SNIPPET_LEAD, len(flat) - SNIPPET_CHARS))
    return flat[begin : begin + SNIPPET_CHARS].strip()


def _score(terms: list[str], title: str, searchable: str) -> float:
    """Score a note: term counts damped by its length, a title boost, a bonus for all terms."""
    words = _WORD_RE.findall(searchable.lower())
    counts = Counter(words)
    in_title = set(_WORD_RE.findall(title.lower()))
    # Dividing by the square root of the length favours the denser of two notes without letting
    # a one-line note beat a long one that is really about the subject.
    length = math.sqrt(max(len(words), 1))
    score = 0.0
    found = 0
    for term in terms:
        occurs = counts[term] > 0 or term in in_title
        found += occurs
        score += counts[term] / length + (TITLE_BOOST if term in in_title else 0.0)
    if found == 0:
        return 0.0
    if found == len(terms):
        score += ALL_TERMS_BONUS
    return round(score, 6)


def search_notes(notes: Iterable[tuple[str, str]], query: str, limit: int = 10) -> list[SearchHit]:
    """Return the best `limit` notes for `query`, best first, ties broken by path."""
    terms = query_terms(query)
    if not terms or limit < 1:
        return []
    hits: list[SearchHit] = []
    for path, text in notes:
        try:
            note = parse_note(text, path)
            title, body, tags = note.meta.title, note.body, note.meta.tags
        except InvalidNoteError:
            # A note with broken front matter is still worth finding; search its raw text.
            title, body, tags = PurePosixPath(path).stem, text, []
        score = _score(terms, title, " ".join([body, *tags]))
        if score > 0:
            hits.append(SearchHit(path, title, score, _snippet(body, terms)))
    hits.sort(key=lambda hit: (-hit.score, hit.path))
    return hits[:limit]
