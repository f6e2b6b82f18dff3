"""Two agent processes' runs of one task share its ledger on a real KV bucket, grouped.

Each process groups its runs' reservations and settlements (`GroupedLedgerStore`); the two
processes still race each other by compare-and-set. The budget holds, every reservation is
settled, and the ledger takes far fewer writes than there were changes.
"""

from __future__ import annotations

import asyncio

import nats
import pytest

from hivebus.contracts import TaskBudget, subjects
from hivebus.core import EmbeddedNats
from hivebus.core.budget import BudgetLedger, GroupedLedgerStore, KvLedgerStore, LedgerState

pytestmark = pytest.mark.e2e

TASK = "shared"
RUNS = 48
"""Runs per process, all at once."""
TOKENS = 100
BUDGET = TaskBudget(max_tokens=6_000, max_cost_usd=100.0)
"""Room for 60 of the 96 runs' reservations of 100 tokens at a time."""


async def test_two_processes_grouping_their_runs_keep_the_budget(
    nats_server: EmbeddedNats,
) -> None:
    """Used + reserved never passes the budget, all settles land, writes < changes."""
    connections = [await nats.connect(nats_server.url) for _ in range(2)]
    try:
        js = connections[0].jetstream()
        await js.create_key_value(bucket=subjects.TASKS_BUCKET, history=1)
        ledgers = []
        for nc in connections:
            kv = await nc.jetstream().key_value(subjects.TASKS_BUCKET)
            ledgers.append(BudgetLedger(GroupedLedgerStore(KvLedgerStore(kv))))
        used: list[int] = []

        async def run(ledger: BudgetLedger, n: int) -> None:
            for _ in range(100):  # refused while others hold the room: wait, as runs do
                reservation, _, may_wait = await ledger.reserve(
                    TASK, BUDGET, TOKENS, 0.01, holder=f"run-{id(ledger)}-{n}"
                )
                if reservation is not None:
                    break
                assert may_wait
                await asyncio.sleep(0.005)
            else:
                pytest.fail("a run never got a reservation")
            await asyncio.sleep(0.001 * (n % 5))  # the model call
            await ledger.settle(reservation, TOKENS // 2, 0.005)
            used.append(TOKENS // 2)

        await asyncio.wait_for(
            asyncio.gather(*(run(ledger, n) for ledger in ledgers for n in range(RUNS))), 60
        )
        kv = await js.key_value(subjects.TASKS_BUCKET)
        entry = await kv.get(subjects.ledger_key(TASK))
        assert entry.value is not None
        final = LedgerState.model_validate_json(entry.value)
        assert (final.reserved_tokens, final.holds) == (0, {})
        assert final.used_tokens == sum(used) == 2 * RUNS * TOKENS // 2
        changes = 2 * 2 * RUNS  # a reservation and a settlement per run, at the least
        writes = int(entry.revision or 0)  # the bucket holds only this key: its revision counts
        assert writes < changes / 2
    finally:
        for nc in connections:
            await nc.close()
