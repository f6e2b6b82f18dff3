"""Bounded decoding: a hostile body is refused with a reason, never decoded into a crash."""

from __future__ import annotations

import pytest

from hivebus.core import UndecodableError
from hivebus.core.decoding import MAX_DEPTH, decode_json


def test_ordinary_json_decodes() -> None:
    """Events as the services publish them decode as usual."""
    assert decode_json(b'{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[" * 5000 + b"]" * 5000, "nested more than"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested more than"),
        (b'{"a": "' + b"x" * 2_000_000 + b'"}', "bytes; at most"),
        (b'"\x80"', "not UTF-8"),
        (b"{not json", "not JSON"),
    ],
)
def test_hostile_bodies_are_refused_with_the_bound_they_broke(body: bytes, reason: str) -> None:
    """Too deep (even beyond the interpreter's stack), too large, not text, not JSON."""
    with pytest.raises(UndecodableError, match=reason):
        decode_json(body)


def test_many_brackets_side_by_side_are_not_depth() -> None:
    """A long flat list of small objects is not nested, whatever its bracket count."""
    body = b"[" + b",".join([b"{}"] * 1000) + b"]"
    assert len(decode_json(body)) == 1000
