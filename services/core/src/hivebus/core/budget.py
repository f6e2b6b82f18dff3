"""The task budget ledger: tokens and cost across every run of a task, on every agent replica.

Before a model call an agent *reserves* an upper bound of what the call can use; after it,
it *settles* the reservation with the actual usage. Both are compare-and-set on one KV key,
so under any interleaving `used + reserved <= max` holds, and `used <= max` holds as long as
each reservation bounds its call (exact for scripted models, conservative for Anthropic).

Every run of a task changes that one key, so an agent process groups its runs' changes
(`GroupedLedgerStore`, on `groups.ChangeGroups`): while one compare-and-set of a task's
ledger is in flight, the changes that arrive wait and go together in the next, applied in
order as if one after the other. Without it, many runs of one task in two processes lost
most of their races.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field

from hivebus.contracts import TaskBudget, subjects
from hivebus.core import kv as kvcas
from hivebus.core.groups import ChangeGroups

WARN_FRACTION = 0.8
"""A `BudgetWarning` goes out once, when usage first reaches this share of a budget."""


class Hold(BaseModel):
    """What one in-flight call holds."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    tokens: int = Field(ge=0)
    cost_usd: float = Field(ge=0)


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
    holds: dict[str, Hold] = Field(
        default_factory=dict,
        description="In-flight reservations by holder (a sub-task attempt: one call at a time).",
    )

    def _without(self, holder: str | None) -> LedgerState:
        """This state with `holder`'s earlier hold released (a worker that died mid-call)."""
        old = self.holds.get(holder) if holder is not None else None
        if old is None:
            return self
        holds = {k: v for k, v in self.holds.items() if k != holder}
        return self.model_copy(
            update={
                "holds": holds,
                "reserved_tokens": max(0, self.reserved_tokens - old.tokens),
                "reserved_cost_usd": max(0.0, round(self.reserved_cost_usd - old.cost_usd, 9)),
            }
        )

    def reserve(
        self, tokens: int, cost_usd: float, holder: str | None = None
    ) -> LedgerState | None:
        """The state with this reservation added, or None if it would break the budget.

        A holder holds one reservation at a time: a new one from the same holder replaces
        the old, which is how a run resumed after its worker died frees what the dead call held.
        """
        base = self._without(holder)
        if base.used_tokens + base.reserved_tokens + tokens > base.max_tokens:
            return None
        if base.used_cost_usd + base.reserved_cost_usd + cost_usd > base.max_cost_usd + 1e-12:
            return None
        holds = dict(base.holds)
        if holder is not None:
            holds[holder] = Hold(tokens=tokens, cost_usd=cost_usd)
        return base.model_copy(
            update={
                "holds": holds,
                "reserved_tokens": base.reserved_tokens + tokens,
                "reserved_cost_usd": round(base.reserved_cost_usd + cost_usd, 9),
            }
        )

    def settle(self, reservation: Reservation, tokens: int, cost_usd: float) -> LedgerState:
        """The state with a reservation replaced by what the call actually used.

        A reservation that was replaced meanwhile (its holder was taken over) frees nothing:
        the new hold is not this one's to release. Its usage still counts.
        """
        base = self
        held = reservation.holder is None
        if reservation.holder is not None:
            hold = self.holds.get(reservation.holder)
            held = hold is not None and hold == Hold(
                tokens=reservation.tokens, cost_usd=reservation.cost_usd
            )
            if held:
                base = self.model_copy(
                    update={
                        "holds": {k: v for k, v in self.holds.items() if k != reservation.holder}
                    }
                )
        used_tokens = self.used_tokens + tokens
        used_cost = round(self.used_cost_usd + cost_usd, 9)
        crossed = (self.max_tokens > 0 and used_tokens >= WARN_FRACTION * self.max_tokens) or (
            self.max_cost_usd > 0 and used_cost >= WARN_FRACTION * self.max_cost_usd
        )
        freed_tokens = reservation.tokens if held else 0
        freed_cost = reservation.cost_usd if held else 0.0
        return base.model_copy(
            update={
                "used_tokens": used_tokens,
                "used_cost_usd": used_cost,
                "reserved_tokens": max(0, self.reserved_tokens - freed_tokens),
                "reserved_cost_usd": max(0.0, round(self.reserved_cost_usd - freed_cost, 9)),
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
    holder: str | None = None


class LedgerChange(Protocol):
    """A pure change of a ledger state (None: leave it)."""

    def __call__(self, current: LedgerState | None, /) -> LedgerState | None:
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
        """Use the bucket `kv`; keep what this process wrote (a settle follows its reserve)."""
        self.kv = kv
        self.attempts = attempts
        self.cache = kvcas.WriteCache(capacity=10_000)

    async def update(self, task_id: str, change: LedgerChange) -> tuple[LedgerState | None, bool]:
        """See `LedgerStore`."""
        return await kvcas.cas_update(
            self.kv,
            subjects.ledger_key(task_id),
            LedgerState,
            change,
            self.attempts,
            cache=self.cache,
            assume_absent=True,
        )


class GroupedLedgerStore:
    """A store whose concurrent changes of one ledger go in one update of `inner`.

    One update per ledger is in flight at a time; what arrives meanwhile goes in the next,
    in arrival order, each change deciding on what the one before left (`ChangeGroups`).
    """

    def __init__(self, inner: LedgerStore) -> None:
        """Group the updates made through `inner`."""
        self._groups: ChangeGroups[LedgerState] = ChangeGroups(inner.update)

    async def update(self, task_id: str, change: LedgerChange) -> tuple[LedgerState | None, bool]:
        """See `LedgerStore`."""
        return await self._groups.update(task_id, change)


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
        self,
        task_id: str,
        budget: TaskBudget,
        tokens: int,
        cost_usd: float,
        holder: str | None = None,
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
            updated = state.reserve(tokens, cost_usd, holder)
            base = state._without(holder)  # noqa: SLF001 - same class
            refusal = "" if updated is not None else base.exhausted_by(tokens, cost_usd)
            may_wait = updated is None and base.fits_once_settled(tokens, cost_usd)
            return updated

        _, changed = await self.store.update(task_id, hold)
        if not changed:
            return None, refusal, may_wait
        return Reservation(task_id, tokens, cost_usd, holder), "", False

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
