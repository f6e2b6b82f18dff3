"""Compare-and-set updates on a JetStream KV bucket: the only way task state changes."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import TypeVar

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel

from hivebus.core.errors import CasConflictError

ModelT = TypeVar("ModelT", bound=BaseModel)


async def read(kv: KeyValue, key: str, model: type[ModelT]) -> tuple[ModelT | None, int]:
    """Return the value at `key` decoded as `model` and its revision (None, 0 when absent)."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None, 0
    if entry.value is None:
        return None, 0
    return model.model_validate_json(entry.value), int(entry.revision or 0)


async def cas_update(
    kv: KeyValue,
    key: str,
    model: type[ModelT],
    change: Callable[[ModelT | None], ModelT | None],
    attempts: int = 50,
) -> tuple[ModelT | None, bool]:
    """Apply `change` to the current value by compare-and-set on its revision, retrying races.

    `change` gets the current value (None when the key is absent) and returns the new value,
    or None to leave it as it is. It may run several times, so it must be pure.

    Returns:
        The value after the update (or the unchanged current value) and whether it was written.

    Raises:
        CasConflictError: other writers won the race `attempts` times in a row.
    """
    for attempt in range(attempts):
        if attempt:  # lost a race: back off a little, with jitter, so racers spread out
            await asyncio.sleep(random.uniform(0, min(0.001 * 2**attempt, 0.05)))  # noqa: S311 - not crypto
        current, revision = await read(kv, key, model)
        updated = change(current)
        if updated is None:
            return current, False
        data = updated.model_dump_json().encode()
        try:
            if revision == 0:
                await kv.create(key, data)
            else:
                await kv.update(key, data, last=revision)
        except KeyWrongLastSequenceError:
            continue
        return updated, True
    raise CasConflictError(f"compare-and-set on {key!r} lost {attempts} races in a row")
