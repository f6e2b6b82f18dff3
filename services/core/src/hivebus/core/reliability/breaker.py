"""Circuit breakers: stop calling what keeps failing, try again after a pause.

    closed ──(failure_threshold failures in a row)──▶ open
    open ──(reset_after_s elapsed; next call allowed as a trial)──▶ half_open
    half_open ──(trial succeeds)──▶ closed
    half_open ──(trial fails)──▶ open (the pause starts again)

Time comes from an injectable clock, so tests move it instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field

from hivebus.core.clock import Clock, SystemClock


class BreakerState(StrEnum):
    """The three states of a breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerPolicy(BaseModel):
    """When a breaker opens and how long it stays open."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    failure_threshold: int = Field(default=3, ge=1, description="Failures in a row that open it.")
    reset_after_s: float = Field(
        default=30.0, gt=0, description="Seconds open before one trial call is let through."
    )


StateListener = Callable[[str, BreakerState, BreakerState], None]
"""Called with (breaker name, old state, new state) on every change."""


class Permit:
    """The right to make one call through a breaker; settle it once with how the call went.

    Used as a context manager, a permit not settled inside the block is released (the call
    said nothing about health), so a cancelled or crashed call never holds the trial forever.
    """

    __slots__ = ("breaker", "settled", "trial")

    def __init__(self, breaker: CircuitBreaker, *, trial: bool) -> None:
        """A permit of `breaker`; `trial` when it is the one call of a half-open spell."""
        self.breaker = breaker
        self.trial = trial
        self.settled = False

    def success(self) -> None:
        """The call succeeded: the breaker closes."""
        if not self.settled:
            self.settled = True
            self.breaker._succeeded()  # noqa: SLF001 - the permit is the breaker's own API

    def failure(self) -> None:
        """The call failed in a way that says the target is unwell (a timeout, a 5xx)."""
        if not self.settled:
            self.settled = True
            self.breaker._failed()  # noqa: SLF001 - the permit is the breaker's own API

    def release(self) -> None:
        """The call said nothing about health (a 4xx, a refusal, a cancellation)."""
        if not self.settled:
            self.settled = True
            self.breaker._released(self)  # noqa: SLF001 - the permit is the breaker's own API

    def __enter__(self) -> Self:
        """Use the permit for the block."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Release the permit if the block did not settle it."""
        self.release()


class CircuitBreaker:
    """One breaker around one model endpoint or tool.

    Ask `allow()` before each call; it returns a `Permit` to settle with the call's outcome,
    or None while the breaker is open (or its half-open trial is still in flight).
    """

    def __init__(
        self,
        name: str,
        policy: BreakerPolicy,
        clock: Clock | None = None,
        listener: StateListener | None = None,
    ) -> None:
        """Start closed."""
        self.name = name
        self.policy = policy
        self.clock = clock or SystemClock()
        self.listener = listener
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self._trial: Permit | None = None
        """The trial of the current half-open spell, while it is in flight."""

    def _move(self, new: BreakerState) -> None:
        old, self.state = self.state, new
        if old != new and self.listener is not None:
            self.listener(self.name, old, new)

    def allow(self) -> Permit | None:
        """A permit for one call now, or None (a half-open breaker lets one trial through)."""
        if self.state == BreakerState.OPEN:
            if self.clock.monotonic() - self.opened_at < self.policy.reset_after_s:
                return None
            self._move(BreakerState.HALF_OPEN)
        if self.state == BreakerState.HALF_OPEN:
            if self._trial is not None:
                return None
            self._trial = Permit(self, trial=True)
            return self._trial
        return Permit(self, trial=False)

    def _succeeded(self) -> None:
        self.failures = 0
        self._trial = None
        self._move(BreakerState.CLOSED)

    def _failed(self) -> None:
        self._trial = None
        self.failures += 1
        if self.state == BreakerState.HALF_OPEN or self.failures >= self.policy.failure_threshold:
            self.opened_at = self.clock.monotonic()
            self._move(BreakerState.OPEN)

    def _released(self, permit: Permit) -> None:
        # Only the trial itself makes way for the next trial; any other call is nobody's trial.
        if permit is self._trial:
            self._trial = None

    def seconds_until_trial(self) -> float:
        """How long an open breaker stays shut (0 when calls may go through)."""
        if self.state != BreakerState.OPEN:
            return 0.0
        return max(0.0, self.policy.reset_after_s - (self.clock.monotonic() - self.opened_at))


class BreakerRegistry:
    """The breakers of one process, by name, created on first use."""

    def __init__(
        self,
        policy: BreakerPolicy,
        clock: Clock | None = None,
        listener: StateListener | None = None,
    ) -> None:
        """Every breaker made here shares the policy, the clock and the listener."""
        self.policy = policy
        self.clock = clock or SystemClock()
        self.listener = listener
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, name: str, policy: BreakerPolicy | None = None) -> CircuitBreaker:
        """The breaker called `name` (created closed on first use)."""
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = CircuitBreaker(name, policy or self.policy, self.clock, self._notify)
            self._breakers[name] = breaker
        return breaker

    def _notify(self, name: str, old: BreakerState, new: BreakerState) -> None:
        if self.listener is not None:
            self.listener(name, old, new)
