"""A bounded least-recently-used map: the one cache shape the services keep in memory."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Lru(Generic[K, V]):
    """At most `capacity` items; the least recently used goes first."""

    def __init__(self, capacity: int) -> None:
        """Keep at most `capacity` items."""
        self.capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The item at `key`, refreshed as most recently used."""
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: K, value: V) -> None:
        """Keep `value` at `key`, dropping the least recently used beyond capacity."""
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def pop(self, key: K) -> None:
        """Drop `key` if present."""
        self._items.pop(key, None)

    def __len__(self) -> int:
        """How many items are kept."""
        return len(self._items)
