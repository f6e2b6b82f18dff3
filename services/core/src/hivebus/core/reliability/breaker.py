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


class CircuitBreaker:
    """One breaker around one model endpoint or tool."""

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
        self.trial_in_flight = False
        self.granted_trial = False
        """Whether the last `allow()` that said yes let the half-open trial through."""

    def _move(self, new: BreakerState) -> None:
        old, self.state = self.state, new
        if old != new and self.listener is not None:
            self.listener(self.name, old, new)

    def allow(self) -> bool:
        """Whether a call may go through now (a half-open breaker lets one trial through).

        Right after a yes, `granted_trial` says whether this call is the trial; pass it to
        `release` so only the trial's release makes way for the next trial.
        """
        self.granted_trial = False
        if self.state == BreakerState.OPEN:
            if self.clock.monotonic() - self.opened_at < self.policy.reset_after_s:
                return False
            self._move(BreakerState.HALF_OPEN)
        if self.state == BreakerState.HALF_OPEN:
            if self.trial_in_flight:
                return False
            self.trial_in_flight = True
            self.granted_trial = True
        return True

    def record_success(self) -> None:
        """A call succeeded: close."""
        self.failures = 0
        self.trial_in_flight = False
        self._move(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """A call failed: count it; open at the threshold, or at once after a failed trial."""
        self.trial_in_flight = False
        self.failures += 1
        if self.state == BreakerState.HALF_OPEN or self.failures >= self.policy.failure_threshold:
            self.opened_at = self.clock.monotonic()
            self._move(BreakerState.OPEN)

    def release(self, *, trial: bool = False) -> None:
        """A call was let through but said nothing about health (a 4xx, a refusal).

        Only the release of the trial itself (`trial=True`) lets the next trial through.
        """
        if trial:
            self.trial_in_flight = False

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
