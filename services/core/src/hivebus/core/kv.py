"""Compare-and-set updates on a JetStream KV bucket: the only way task state changes.

A process may keep a `WriteCache` of what it wrote itself (value and revision): an update
then writes against the cached revision without reading the key first, and the server's
compare-and-set still refuses it if anyone else wrote since (the cache is then dropped and
the key read). A cached value is trusted only where that check protects it: when a change
decides on a cached value to write nothing, the key is read and the change asked again, and
plain reads take from the cache only values that can never change again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any, TypeVar

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from hivebus.core.errors import CasConflictError
from hivebus.core.lru import Lru

ModelT = TypeVar("ModelT", bound=BaseModel)


class WriteCache:
    """What this process last wrote (or read) per key: value and revision, bounded LRU."""

    def __init__(self, capacity: int = 50_000) -> None:
        """Keep at most `capacity` keys."""
        self._items: Lru[str, tuple[Any, int]] = Lru(capacity)

    def get(self, key: str) -> tuple[Any, int] | None:
        """The cached value and revision of `key`, if any."""
        return self._items.get(key)

    def put(self, key: str, value: Any, revision: int) -> None:
        """Remember `value` at `revision` for `key`."""
        self._items.put(key, (value, revision))

    def forget(self, key: str) -> None:
        """Drop `key` (someone else wrote it, or its value is no longer needed)."""
        self._items.pop(key)

    def __len__(self) -> int:
        """How many keys are kept."""
        return len(self._items)


async def read(
    kv: KeyValue,
    key: str,
    model: type[ModelT],
    cache: WriteCache | None = None,
    final: Callable[[ModelT], bool] | None = None,
) -> tuple[ModelT | None, int]:
    """Return the value at `key` decoded as `model` and its revision (None, 0 when absent).

    With a `cache`, a cached value for which `final(value)` holds (it can never change again)
    is returned without a request.
    """
    if cache is not None and final is not None:
        cached = cache.get(key)
        if cached is not None and cached[0] is not None and final(cached[0]):
            return cached[0], cached[1]
    value, revision = await _fetch(kv, key, model)
    if cache is not None and value is not None:
        cache.put(key, value, revision)
    return value, revision


async def _fetch(kv: KeyValue, key: str, model: type[ModelT]) -> tuple[ModelT | None, int]:
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None, 0
    if entry.value is None:
        return None, 0
    return model.model_validate_json(entry.value), int(entry.revision or 0)


async def _write(kv: KeyValue, key: str, data: bytes, revision: int) -> int | None:
    """Write if `revision` is still the key's (0: absent); the new revision, or None if not."""
    try:
        if revision == 0:
            return int(await kv.create(key, data))
        return int(await kv.update(key, data, last=revision))
    except KeyWrongLastSequenceError:
        return None


async def cas_update(
    kv: KeyValue,
    key: str,
    model: type[ModelT],
    change: Callable[[ModelT | None], ModelT | None],
    attempts: int = 50,
    *,
    cache: WriteCache | None = None,
    assume_absent: bool = False,
) -> tuple[ModelT | None, bool]:
    """Apply `change` to the current value by compare-and-set on its revision, retrying races.

    `change` gets the current value (None when the key is absent) and returns the new value,
    or None to leave it as it is. It may run several times, so it must be pure. With a
    `cache`, the first try works on the cached value and revision (see the module docstring);
    a key not in the cache is, with `assume_absent`, first tried as absent (a create, no read):
    for keys a process usually writes first, the server's refusal costs one request only when
    the guess was wrong.

    Returns:
        The value after the update (or the unchanged current value) and whether it was written.

    Raises:
        CasConflictError: other writers won the race `attempts` times in a row.
    """
    cached = cache.get(key) if cache is not None else None
    if cached is None and assume_absent:
        cached = (None, 0)
    raced = False
    for attempt in range(attempts):
        if raced:  # lost a race: back off a little, with jitter, so racers spread out
            await asyncio.sleep(random.uniform(0, min(0.001 * 2**attempt, 0.05)))  # noqa: S311 - not crypto
        if cached is not None:
            current, revision = cached
        else:
            current, revision = await _fetch(kv, key, model)
        updated = change(current)
        if updated is None:
            if cached is not None:  # decided on what this process saw: check the key itself
                cached = None
                continue
            return current, False
        # Defaults are left out (readers fill them in): a 10,000-sub-task plan then fits in
        # one message (1.3 MB with them, 0.44 MB without).
        data = updated.model_dump_json(exclude_defaults=True).encode()
        written = await _write(kv, key, data, revision)
        if written is None:  # someone else wrote since
            if cache is not None:
                cache.forget(key)
            raced, cached = cached is None, None
            continue
        if cache is not None:
            cache.put(key, updated, written)
        return updated, True
    raise CasConflictError(f"compare-and-set on {key!r} lost {attempts} races in a row")
