"""`ChangeGroups`: concurrent changes of one key in one update, each with its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from hivebus.core.groups import ChangeGroups

Change = Callable[[int | None], int | None]


class Racy:
    """A compare-and-set store of ints that another writer beats `losses` times."""

    def __init__(self, losses: int = 0) -> None:
        """Start with nothing stored."""
        self.values: dict[str, int] = {}
        self.updates = 0
        self.runs = 0
        self.losses = losses

    async def update(self, key: str, change: Change) -> tuple[int | None, bool]:
        """Run `change` until its write is not beaten; yield in between, as a request would."""
        self.updates += 1
        while True:
            self.runs += 1
            current = self.values.get(key)
            updated = change(current)
            await asyncio.sleep(0)
            if self.losses:
                self.losses -= 1
                self.values[key] = 5  # someone else wrote meanwhile
                continue
            if updated is None:
                return current, False
            self.values[key] = updated
            return updated, True


def add(n: int) -> Change:
    """Add `n`, refusing to go past 10."""
    return lambda cur: None if (cur or 0) + n > 10 else (cur or 0) + n


async def test_each_caller_gets_the_value_after_its_own_change() -> None:
    """Changes arriving while one update is in flight go in the next, in order."""
    store = Racy()
    groups: ChangeGroups[int] = ChangeGroups(store.update)
    first = asyncio.ensure_future(groups.update("k", add(1)))
    await asyncio.sleep(0)  # its update is in flight
    others = await asyncio.gather(*(groups.update("k", add(n)) for n in (2, 3, 9, 4)))
    assert [await first, *others] == [(1, True), (3, True), (6, True), (6, False), (10, True)]
    assert store.updates == 2  # the first alone, the other four together
    assert store.values["k"] == 10


async def test_a_lost_race_decides_every_change_of_the_group_again() -> None:
    """After another writer's value, the changes decide on it, not on what they saw first."""
    store = Racy(losses=1)
    groups: ChangeGroups[int] = ChangeGroups(store.update)
    outcomes = await asyncio.gather(groups.update("k", add(1)), groups.update("k", add(2)))
    assert outcomes == [(6, True), (8, True)]  # on the other writer's 5, not on nothing
    assert store.runs == 2  # one group, run again once after it was beaten


async def test_an_update_that_fails_fails_every_change_in_it() -> None:
    """The store's error reaches each caller of the group; the next group starts afresh."""

    async def broken(key: str, change: Change) -> tuple[int | None, bool]:  # noqa: ARG001
        raise ConnectionError("the bus is down")

    groups: ChangeGroups[int] = ChangeGroups(broken)
    results = await asyncio.gather(
        groups.update("k", add(1)), groups.update("k", add(2)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    working: ChangeGroups[int] = ChangeGroups(Racy().update)
    assert await working.update("k", add(1)) == (1, True)
    with pytest.raises(ConnectionError):
        await groups.update("k", add(1))
