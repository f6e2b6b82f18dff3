"""The commits of the newest writes, by write id: how a redelivered write finds its own commit.

A write is redelivered when the service died (or an announcement failed) after its commit and
before its result was stored. By then later writes, of its own batch too, may have replaced
the note, so "the note's last commit is mine" is not enough to recognise it: the store looks
its write id up here first. The window is filled from the newest commits' `write-id:` trailers
at start-up, then from every batch made durable.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

__all__ = ["REPLAY_WINDOW", "RecentWrites"]

REPLAY_WINDOW = 4096
"""Newest commits whose write ids are remembered (about 100 s of commits at 40 per second)."""


class RecentWrites:
    """A bounded map from write id to the commit that applied it, oldest forgotten first."""

    def __init__(self, limit: int = REPLAY_WINDOW) -> None:
        """Remember at most `limit` writes."""
        self.limit = limit
        self._commits: OrderedDict[str, str] = OrderedDict()

    def add(self, made: Iterable[tuple[str, str]]) -> None:
        """Remember `(write id, commit)` pairs, oldest first."""
        for write_id, commit in made:
            self._commits[write_id] = commit
            self._commits.move_to_end(write_id)
        while len(self._commits) > self.limit:
            self._commits.popitem(last=False)

    def commit_of(self, write_id: str) -> str | None:
        """The commit that applied `write_id`, None when it is not remembered."""
        return self._commits.get(write_id)
