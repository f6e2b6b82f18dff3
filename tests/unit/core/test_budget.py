"""The task budget ledger: reservations and settlements from many agents never break the budget.

The store here behaves like the KV bucket: a compare-and-set on a revision, with other agents
running between an update's read and its write, so concurrent reserve/settle really race.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from hivebus.contracts import TaskBudget
from hivebus.core.budget import (
    WARN_FRACTION,
    BudgetLedger,
    GroupedLedgerStore,
    LedgerChange,
    LedgerState,
    MemoryLedgerStore,
    Reservation,
)

TASK = "task-1"
COST_EPS = 1e-9  # costs are kept rounded to 9 decimals
CAS_ATTEMPTS = 10_000


class RacingStore:
    """Ledgers updated by compare-and-set on a revision, yielding to other tasks mid-update.

    Every state written is checked with `check` first; `pauses()` says how many times to let
    the other agents run between reading a ledger and writing it back.
    """

    def __init__(self, pauses: Callable[[], int], check: Callable[[LedgerState], None]) -> None:
        """Start empty."""
        self.entries: dict[str, tuple[LedgerState, int]] = {}
        self.pauses = pauses
        self.check = check
        self.races_lost = 0
        self.updates = 0

    async def update(self, task_id: str, change: LedgerChange) -> tuple[LedgerState | None, bool]:
        """Read, change, let others run, write only if nobody wrote in between (else retry)."""
        self.updates += 1
        for _ in range(CAS_ATTEMPTS):
            current, revision = self.entries.get(task_id, (None, 0))
            updated = change(current.model_copy() if current else None)
            if updated is None:
                return current, False
            for _ in range(self.pauses()):
                await asyncio.sleep(0)
            if self.entries.get(task_id, (None, 0))[1] != revision:
                self.races_lost += 1
                continue
            self.check(updated)
            self.entries[task_id] = (updated, revision + 1)
            return updated, True
        msg = f"lost {CAS_ATTEMPTS} races in a row"
        raise AssertionError(msg)


def within(state: LedgerState) -> None:
    """`used + reserved <= max` for tokens and cost; nothing negative."""
    assert state.used_tokens + state.reserved_tokens <= state.max_tokens
    assert state.used_cost_usd + state.reserved_cost_usd <= state.max_cost_usd + COST_EPS
    assert min(state.reserved_tokens, state.reserved_cost_usd) >= 0


def crosses(state: LedgerState) -> bool:
    """Whether usage has reached the warning share of either budget."""
    return (
        state.used_tokens >= WARN_FRACTION * state.max_tokens
        or state.used_cost_usd >= WARN_FRACTION * state.max_cost_usd
    )


MICRO_USD = 1e-6

calls = st.tuples(
    st.integers(min_value=0, max_value=400),  # tokens reserved
    st.integers(min_value=0, max_value=3_000),  # micro-dollars reserved
    st.floats(min_value=0, max_value=1),  # share of the tokens actually used
    st.floats(min_value=0, max_value=1),  # share of the cost actually used
    st.integers(min_value=0, max_value=3),  # turns other agents get during the call
)
Call = tuple[int, int, float, float, int]


@settings(max_examples=150, deadline=None)
@given(
    agents=st.lists(st.lists(calls, min_size=1, max_size=5), min_size=2, max_size=5),
    max_tokens=st.integers(min_value=1, max_value=2_000),
    max_micro_usd=st.integers(min_value=1, max_value=10_000),
    rng=st.randoms(use_true_random=False),
    grouped=st.booleans(),
)
async def test_concurrent_reserve_and_settle_never_break_the_budget(
    agents: list[list[Call]],
    max_tokens: int,
    max_micro_usd: int,
    rng: random.Random,
    grouped: bool,  # noqa: FBT001 - drawn by hypothesis
) -> None:
    """Racing agents keep used + reserved <= max, end used <= max, warn once iff past 80%.

    Half the examples share one grouping store, as the runs of one agent process do.
    """
    budget = TaskBudget(max_tokens=max_tokens, max_cost_usd=max_micro_usd * MICRO_USD)
    # A random of its own: the grouping store's updates run in a task of their own context,
    # where hypothesis's `randoms()` must not draw.
    turns = random.Random(rng.getrandbits(64))
    store = RacingStore(lambda: turns.choice((0, 1, 1, 2, 3)), within)
    ledger = BudgetLedger(GroupedLedgerStore(store) if grouped else store)
    refusals: list[str] = []
    crossings: list[LedgerState] = []
    used: list[tuple[int, float]] = []

    async def agent(plan: list[Call]) -> None:
        for tokens, micro_usd, token_share, cost_share, turns in plan:
            cost = micro_usd * MICRO_USD
            reservation, why, _ = await ledger.reserve(TASK, budget, tokens, cost)
            if reservation is None:
                refusals.append(why)
                continue
            for _ in range(turns):
                await asyncio.sleep(0)
            actual = (math.floor(tokens * token_share), cost * cost_share)
            crossed = await ledger.settle(reservation, *actual)
            used.append(actual)
            if crossed is not None:
                crossings.append(crossed)

    await asyncio.gather(*(agent(plan) for plan in agents))
    event(f"races lost: {'some' if store.races_lost else 'none'}")
    event(f"grouped: {grouped}")
    event(f"refusals: {'some' if refusals else 'none'}")

    assert all(
        why.startswith(("task budget max_tokens", "task budget max_cost_usd")) for why in refusals
    )
    if TASK not in store.entries:  # every first reservation was refused: no ledger yet
        assert not used
        return
    final, _ = store.entries[TASK]
    within(final)
    assert (final.reserved_tokens, final.reserved_cost_usd) == (0, pytest.approx(0, abs=COST_EPS))
    assert final.used_tokens == sum(tokens for tokens, _ in used) <= max_tokens
    rounding = COST_EPS * (len(used) + 1)  # each settle rounds the sum to 9 decimals
    assert final.used_cost_usd == pytest.approx(sum(cost for _, cost in used), abs=rounding)
    assert final.warned == crosses(final)
    assert len(crossings) == (1 if final.warned else 0)
    assert all(state.warned and crosses(state) for state in crossings)


async def test_the_racing_store_makes_updates_race() -> None:
    """The store used above does make concurrent updates lose races and retry."""
    store = RacingStore(lambda: 1, within)
    ledger = BudgetLedger(store)
    budget = TaskBudget(max_tokens=1_000, max_cost_usd=1.0)
    granted = await asyncio.gather(*(ledger.reserve(TASK, budget, 100, 0.01) for _ in range(5)))
    assert all(reservation is not None for reservation, _, _ in granted)
    assert store.races_lost > 0
    assert store.entries[TASK][0].reserved_tokens == 500


async def test_one_process_changes_of_one_ledger_go_in_few_updates() -> None:
    """40 runs reserving at once: few updates, and exactly as many grants as the budget holds."""
    store = RacingStore(lambda: 1, within)
    ledger = BudgetLedger(GroupedLedgerStore(store))
    budget = TaskBudget(max_tokens=3_000, max_cost_usd=1.0)
    granted = await asyncio.gather(*(ledger.reserve(TASK, budget, 100, 0.01) for _ in range(40)))
    reservations = [r for r, _, _ in granted if r is not None]
    assert len(reservations) == 30  # the 31st and later find 3,000 tokens reserved
    assert all(why.startswith("task budget max_tokens") for r, why, _ in granted if r is None)
    assert store.updates <= 3  # the first alone, then the rest in one or two groups
    assert store.entries[TASK][0].reserved_tokens == 3_000
    await asyncio.gather(*(ledger.settle(r, 50, 0.005) for r in reservations))
    final = store.entries[TASK][0]
    assert (final.reserved_tokens, final.used_tokens) == (0, 1_500)


async def test_a_change_that_raises_fails_alone_in_its_group() -> None:
    """The others in its group are applied; the failing caller gets its own error."""
    store = MemoryLedgerStore()
    grouped = GroupedLedgerStore(store)
    budget = TaskBudget(max_tokens=1_000, max_cost_usd=1.0)
    ledger = BudgetLedger(grouped)
    first = asyncio.ensure_future(ledger.reserve(TASK, budget, 100, 0.01))

    def broken(current: LedgerState | None) -> LedgerState | None:  # noqa: ARG001
        raise ValueError("a bug in one change")

    results = await asyncio.gather(
        ledger.reserve(TASK, budget, 200, 0.01),
        grouped.update(TASK, broken),
        ledger.reserve(TASK, budget, 300, 0.01),
        return_exceptions=True,
    )
    await first
    assert isinstance(results[1], ValueError)
    assert store.states[TASK].reserved_tokens == 600


async def test_a_caller_that_gave_up_before_its_group_changes_nothing() -> None:
    """A reservation cancelled while it waited for the update in flight is never made."""
    store = RacingStore(lambda: 3, within)
    ledger = BudgetLedger(GroupedLedgerStore(store))
    budget = TaskBudget(max_tokens=1_000, max_cost_usd=1.0)
    in_flight = asyncio.ensure_future(ledger.reserve(TASK, budget, 100, 0.01))
    await asyncio.sleep(0)  # its update is now in flight
    waiting = asyncio.ensure_future(ledger.reserve(TASK, budget, 500, 0.01))
    await asyncio.sleep(0)
    waiting.cancel()
    assert (await in_flight)[0] is not None
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0.01)
    assert store.entries[TASK][0].reserved_tokens == 100


states = st.builds(
    lambda max_tokens, max_micro, used_t, resv_t, used_c, resv_c: LedgerState(
        max_tokens=max_tokens,
        max_cost_usd=max_micro * MICRO_USD,
        used_tokens=min(used_t, max_tokens),
        reserved_tokens=min(resv_t, max_tokens - min(used_t, max_tokens)),
        used_cost_usd=min(used_c, max_micro) * MICRO_USD,
        reserved_cost_usd=min(resv_c, max_micro - min(used_c, max_micro)) * MICRO_USD,
    ),
    st.integers(1, 1_000),
    st.integers(1, 1_000),
    st.integers(0, 1_000),
    st.integers(0, 1_000),
    st.integers(0, 1_000),
    st.integers(0, 1_000),
)


@settings(max_examples=300, deadline=None)
@given(state=states, tokens=st.integers(0, 1_200), micro_usd=st.integers(0, 1_200))
async def test_a_reservation_is_granted_exactly_when_both_budgets_cover_it(
    state: LedgerState, tokens: int, micro_usd: int
) -> None:
    """A reservation is granted iff both budgets cover it; a refusal names the one it breaks."""
    cost = micro_usd * MICRO_USD
    held = state.reserved_tokens + state.reserved_cost_usd > 0
    tokens_break = state.used_tokens + state.reserved_tokens + tokens > state.max_tokens
    cost_break = (
        state.used_cost_usd + state.reserved_cost_usd + cost > state.max_cost_usd + COST_EPS / 2
    )
    fits_used_alone = (
        state.used_tokens + tokens <= state.max_tokens
        and state.used_cost_usd + cost <= state.max_cost_usd + COST_EPS / 2
    )
    store = MemoryLedgerStore()
    store.states[TASK] = state
    budget = TaskBudget(max_tokens=state.max_tokens, max_cost_usd=state.max_cost_usd)
    reservation, why, may_wait = await BudgetLedger(store).reserve(TASK, budget, tokens, cost)
    if not tokens_break and not cost_break:
        assert reservation == Reservation(TASK, tokens, cost)
        assert store.states[TASK].reserved_tokens == state.reserved_tokens + tokens
        within(store.states[TASK])
        assert (why, may_wait) == ("", False)
        return
    assert reservation is None
    assert store.states[TASK] == state
    assert why.startswith("task budget max_tokens" if tokens_break else "task budget max_cost_usd")
    assert may_wait == (held and fits_used_alone)  # only in-flight reservations stand in the way


async def test_crossing_80_percent_is_reported_by_exactly_one_settle() -> None:
    """The settle that first brings usage to 80% returns the state; earlier and later ones None."""
    ledger = BudgetLedger(MemoryLedgerStore())
    budget = TaskBudget(max_tokens=100, max_cost_usd=1.0)
    seen = []
    for _ in range(5):
        reservation, _, _ = await ledger.reserve(TASK, budget, 20, 0.0)
        assert reservation is not None
        seen.append(await ledger.settle(reservation, 20, 0.0))
    assert [state is not None for state in seen] == [False, False, False, True, False]
    crossed = seen[3]
    assert crossed is not None
    assert (crossed.used_tokens, crossed.warned) == (80, True)


async def test_settling_more_than_reserved_still_accounts_it() -> None:
    """Usage beyond the reservation is accounted in full, even past the budget."""
    store = MemoryLedgerStore()
    ledger = BudgetLedger(store)
    budget = TaskBudget(max_tokens=120, max_cost_usd=1.0)
    reservation, _, _ = await ledger.reserve(TASK, budget, 100, 0.1)
    assert reservation == Reservation(TASK, 100, 0.1)
    await ledger.settle(reservation, 150, 0.25)
    state = store.states[TASK]
    assert (state.used_tokens, state.reserved_tokens) == (150, 0)
    assert (state.used_cost_usd, state.reserved_cost_usd) == (0.25, 0.0)
    refused, why, may_wait = await ledger.reserve(TASK, budget, 1, 0.0)
    assert refused is None
    assert not may_wait  # used alone leaves no room: waiting cannot help
    assert why.startswith("task budget max_tokens reached (150 used")


@pytest.mark.parametrize(
    ("tokens", "cost", "named"),
    [(81, 0.0, "max_tokens"), (10, 0.6, "max_cost_usd"), (81, 0.6, "max_tokens")],
    ids=["tokens", "cost", "both"],
)
async def test_a_refusal_names_the_budget_that_would_break(
    tokens: int, cost: float, named: str
) -> None:
    """A refused reservation says which budget it would break, with the numbers."""
    ledger = BudgetLedger(MemoryLedgerStore())
    budget = TaskBudget(max_tokens=100, max_cost_usd=1.0)
    held, _, _ = await ledger.reserve(TASK, budget, 20, 0.5)
    assert held is not None
    refused, why, _ = await ledger.reserve(TASK, budget, tokens, cost)
    assert refused is None
    assert why.startswith(f"task budget {named} reached")


async def test_a_settle_without_a_ledger_changes_nothing() -> None:
    """Settling against a task with no ledger leaves the store empty and reports no crossing."""
    store = MemoryLedgerStore()
    crossed = await BudgetLedger(store).settle(Reservation(TASK, 10, 0.1), 10, 0.1)
    assert crossed is None
    assert store.states == {}


async def test_a_cost_refusal_shows_the_cost_others_have_reserved() -> None:
    """A cost refusal caused by other agents' reservations shows what they hold."""
    ledger = BudgetLedger(MemoryLedgerStore())
    budget = TaskBudget(max_tokens=1_000, max_cost_usd=1.0)
    await ledger.reserve(TASK, budget, 10, 0.9)
    refused, why, _ = await ledger.reserve(TASK, budget, 10, 0.2)
    assert refused is None
    assert "reserved" in why, why


async def test_a_zero_cost_budget_does_not_warn_before_80_percent_of_tokens() -> None:
    """With a zero cost budget (free models only), the warning waits for 80% of the tokens."""
    ledger = BudgetLedger(MemoryLedgerStore())
    budget = TaskBudget(max_tokens=1_000, max_cost_usd=0.0)
    reservation, _, _ = await ledger.reserve(TASK, budget, 10, 0.0)
    assert reservation is not None
    assert await ledger.settle(reservation, 10, 0.0) is None
