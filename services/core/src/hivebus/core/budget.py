"""The task budget ledger: tokens and cost across every run of a task, on every agent replica.

Before a model call an agent *reserves* an upper bound of what the call can use; after it,
it *settles* the reservation with the actual usage. Both are compare-and-set on one KV key,
so under any interleaving `used + reserved <= max` holds, and `used <= max` holds as long as
each reservation bounds its call (exact for scripted models, conservative for Anthropic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field

from hivebus.contracts import TaskBudget, subjects
from hivebus.core import kv as kvcas

WARN_FRACTION = 0.8
"""A `BudgetWarning` goes out once, when usage first reaches this share of a budget."""


class LedgerState(BaseModel):
    """One task's budget, what runs have used, and what in-flight calls have reserved."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_tokens: int = Field(ge=0)
    max_cost_usd: float = Field(ge=0)
    used_tokens: int = Field(default=0, ge=0)
    used_cost_usd: float = Field(default=0.0, ge=0)
    reserved_tokens: int = Field(default=0, ge=0)
    reserved_cost_usd: float = Field(default=0.0, ge=0)
    warned: bool = False

    def reserve(self, tokens: int, cost_usd: float) -> LedgerState | None:
        """The state with this reservation added, or None if it would break the budget."""
        if self.used_tokens + self.reserved_tokens + tokens > self.max_tokens:
            return None
        if self.used_cost_usd + self.reserved_cost_usd + cost_usd > self.max_cost_usd + 1e-12:
            return None
        return self.model_copy(
            update={
                "reserved_tokens": self.reserved_tokens + tokens,
                "reserved_cost_usd": round(self.reserved_cost_usd + cost_usd, 9),
            }
        )

    def settle(self, reservation: Reservation, tokens: int, cost_usd: float) -> LedgerState:
        """The state with a reservation replaced by what the call actually used."""
        used_tokens = self.used_tokens + tokens
        used_cost = round(self.used_cost_usd + cost_usd, 9)
        crossed = (self.max_tokens > 0 and used_tokens >= WARN_FRACTION * self.max_tokens) or (
            self.max_cost_usd > 0 and used_cost >= WARN_FRACTION * self.max_cost_usd
        )
        return self.model_copy(
            update={
                "used_tokens": used_tokens,
                "used_cost_usd": used_cost,
                "reserved_tokens": max(0, self.reserved_tokens - reservation.tokens),
                "reserved_cost_usd": max(
                    0.0, round(self.reserved_cost_usd - reservation.cost_usd, 9)
                ),
                "warned": self.warned or crossed,
            }
        )

    def fits_once_settled(self, tokens: int, cost_usd: float) -> bool:
        """Whether the request fits what is used, if in-flight reservations held nothing."""
        return (self.reserved_tokens > 0 or self.reserved_cost_usd > 0) and (
            self.used_tokens + tokens <= self.max_tokens
            and self.used_cost_usd + cost_usd <= self.max_cost_usd + 1e-12
        )

    def exhausted_by(self, tokens: int, cost_usd: float) -> str:
        """Which budget a refused reservation would have broken, in words."""
        if self.used_tokens + self.reserved_tokens + tokens > self.max_tokens:
            return (
                f"task budget max_tokens reached ({self.used_tokens} used, "
                f"{self.reserved_tokens} reserved, {tokens} needed, {self.max_tokens} allowed)"
            )
        return (
            f"task budget max_cost_usd reached (${self.used_cost_usd:.4f} used, "
            f"${self.reserved_cost_usd:.4f} reserved, ${cost_usd:.4f} needed, "
            f"${self.max_cost_usd:.4f} allowed)"
        )


@dataclass(frozen=True)
class Reservation:
    """What one in-flight model call holds against the task budget."""

    task_id: str
    tokens: int
    cost_usd: float


class LedgerChange(Protocol):
    """A pure change of a ledger state (None: leave it)."""

    def __call__(self, current: LedgerState | None) -> LedgerState | None:
        """Return the new state or None."""
        ...


class LedgerStore(Protocol):
    """Where ledgers live: compare-and-set updates by task."""

    async def update(self, task_id: str, change: LedgerChange) -> tuple[LedgerState | None, bool]:
        """Apply `change` by compare-and-set; return the state after and whether it changed."""
        ...


class KvLedgerStore:
    """Ledgers as `<task>.ledger` in the `tasks` KV bucket."""

    def __init__(self, kv: KeyValue, attempts: int = 50) -> None:
        """Use the bucket `kv`."""
        self.kv = kv
        self.attempts = attempts

    async def update(self, task_id: str, change: LedgerChange) -> tuple[LedgerState | None, bool]:
        """See `LedgerStore`."""
        return await kvcas.cas_update(
            self.kv, f"{task_id}.{subjects.LEDGER_KEY_SUFFIX}", LedgerState, change, self.attempts
        )


class MemoryLedgerStore:
    """Ledgers in a dict, for tests; same semantics as the KV store."""

    def __init__(self) -> None:
        """Start empty."""
        self.states: dict[str, LedgerState] = {}

    async def update(self, task_id: str, change: LedgerChange) -> tuple[LedgerState | None, bool]:
        """See `LedgerStore`."""
        current = self.states.get(task_id)
        updated = change(current.model_copy() if current else None)
        if updated is None:
            return current, False
        self.states[task_id] = updated
        return updated, True


class BudgetLedger:
    """Reserve before a model call, settle after; tells the caller when to warn."""

    def __init__(self, store: LedgerStore) -> None:
        """Keep ledgers in `store`."""
        self.store = store

    async def reserve(
        self, task_id: str, budget: TaskBudget, tokens: int, cost_usd: float
    ) -> tuple[Reservation | None, str, bool]:
        """Hold `tokens`/`cost_usd`.

        Returns the reservation (or None), why it was refused, and whether waiting can help:
        True when only other calls' reservations stand in the way (they settle soon, usually
        for less than they held), False when used tokens or cost alone leave no room.
        """
        refusal = ""
        may_wait = False

        def hold(current: LedgerState | None) -> LedgerState | None:
            nonlocal refusal, may_wait
            state = current or LedgerState(
                max_tokens=budget.max_tokens, max_cost_usd=budget.max_cost_usd
            )
            updated = state.reserve(tokens, cost_usd)
            refusal = "" if updated is not None else state.exhausted_by(tokens, cost_usd)
            may_wait = updated is None and state.fits_once_settled(tokens, cost_usd)
            return updated

        _, changed = await self.store.update(task_id, hold)
        if not changed:
            return None, refusal, may_wait
        return Reservation(task_id, tokens, cost_usd), "", False

    async def settle(
        self, reservation: Reservation, tokens: int, cost_usd: float
    ) -> LedgerState | None:
        """Replace the reservation by actual usage.

        Returns the new state if this settle *just* crossed the warning threshold (so exactly
        one settle per task sees it), else None.
        """
        crossed: LedgerState | None = None

        def apply(current: LedgerState | None) -> LedgerState | None:
            nonlocal crossed
            if current is None:
                return None
            updated = current.settle(reservation, tokens, cost_usd)
            crossed = updated if updated.warned and not current.warned else None
            return updated

        await self.store.update(reservation.task_id, apply)
        return crossed
