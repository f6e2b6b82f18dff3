"""Circuit breakers: a state machine explored by Hypothesis against the documented rules.

closed ──(failure_threshold failures in a row)──▶ open
open ──(reset_after_s elapsed; next call allowed as a trial)──▶ half_open
half_open ──(trial succeeds)──▶ closed
half_open ──(trial fails)──▶ open (the pause starts again)
"""

from __future__ import annotations

import pytest
from hivetest import FakeClock
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from hivebus.core.reliability import (
    BreakerPolicy,
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
    Permit,
)

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
NAME = "model:test"

Change = tuple[str, BreakerState, BreakerState]


class BreakerMachine(RuleBasedStateMachine):
    """Calls go through one breaker, several at once (runs share a process's breakers).

    Next to the breaker runs a reference model of the documented rules; every rule checks the
    breaker against it, and that the listener heard exactly the state changes that happened.
    Any call in flight may settle at any time, a non-trial call released during a half-open
    trial included: only the trial's own permit makes way for the next trial.
    """

    def __init__(self) -> None:
        """A closed breaker with the default policy until `configure` runs."""
        super().__init__()
        self.clock = FakeClock()
        self.heard: list[Change] = []
        self.policy = BreakerPolicy()
        self.breaker = CircuitBreaker(NAME, self.policy, self.clock, self._listen)
        self.in_flight: list[Permit] = []
        # the reference model
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.trial: Permit | None = None  # the trial of the current half-open spell, in flight

    def _listen(self, name: str, old: BreakerState, new: BreakerState) -> None:
        self.heard.append((name, old, new))

    @initialize(
        threshold=st.integers(min_value=1, max_value=3),
        reset_after_s=st.sampled_from([0.5, 1.0, 5.0, 30.0]),
    )
    def configure(self, threshold: int, reset_after_s: float) -> None:
        """Pick the policy."""
        self.policy = BreakerPolicy(failure_threshold=threshold, reset_after_s=reset_after_s)
        self.breaker = CircuitBreaker(NAME, self.policy, self.clock, self._listen)

    def _moved(self, before: BreakerState, heard_before: int) -> None:
        """The breaker is where the model is, and the listener heard exactly that move."""
        assert self.breaker.state is self.state
        expected = [(NAME, before, self.state)] if before is not self.state else []
        assert self.heard[heard_before:] == expected

    def _take(self, pick: int) -> Permit:
        call = self.in_flight[pick % len(self.in_flight)]
        self.in_flight.remove(call)
        return call

    @rule()
    def allow(self) -> None:
        """Ask to call: open refuses until the pause is over, then one trial goes through."""
        before, heard = self.state, len(self.heard)
        elapsed = self.clock.monotonic() - self.opened_at
        permit = self.breaker.allow()
        allowed = permit is not None
        if self.state is OPEN:
            if elapsed < self.policy.reset_after_s:
                assert not allowed, "an open breaker let a call through before its pause ended"
                self._moved(before, heard)
                return
            self.state, self.trial = HALF_OPEN, None
        if self.state is HALF_OPEN:
            if self.trial is not None:
                assert not allowed, "a second trial went through while one was in flight"
            else:
                assert permit is not None, "a half-open breaker refused the trial"
                assert permit.trial
                self.trial = permit
                self.in_flight.append(permit)
        else:
            assert permit is not None, "a closed breaker refused a call"
            assert not permit.trial
            self.in_flight.append(permit)
        self._moved(before, heard)

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(min_value=0))
    def succeed(self, pick: int) -> None:
        """A call succeeds: the breaker closes, whatever state it was in."""
        call = self._take(pick)
        before, heard = self.state, len(self.heard)
        call.success()
        self.state, self.failures, self.trial = CLOSED, 0, None
        self._moved(before, heard)

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(min_value=0))
    def fail(self, pick: int) -> None:
        """A call fails: a failed trial reopens, and so do `failure_threshold` in a row."""
        call = self._take(pick)
        before, heard = self.state, len(self.heard)
        call.failure()
        self.failures += 1
        if self.state is not CLOSED or self.failures >= self.policy.failure_threshold:
            self.state, self.opened_at, self.trial = OPEN, self.clock.monotonic(), None
        self._moved(before, heard)

    @precondition(lambda self: self.in_flight)
    @rule(pick=st.integers(min_value=0))
    def release(self, pick: int) -> None:
        """A call says nothing about health (a 4xx); only the trial makes way for the next."""
        call = self._take(pick)
        before, heard = self.state, len(self.heard)
        call.release()
        if call is self.trial:
            self.trial = None
        self._moved(before, heard)

    @rule(
        seconds=st.one_of(
            st.sampled_from([0.5, 1.0, 5.0, 30.0]),
            st.floats(min_value=0, max_value=40, allow_nan=False),
        )
    )
    def advance(self, seconds: float) -> None:
        """Time passes; nothing changes until someone asks."""
        before, heard = self.state, len(self.heard)
        self.clock.advance(seconds)
        self._moved(before, heard)

    @invariant()
    def agrees_with_the_model(self) -> None:
        """State, the wait before a trial, and every change heard is a real one."""
        assert self.breaker.state is self.state
        if self.state is OPEN:
            left = self.policy.reset_after_s - (self.clock.monotonic() - self.opened_at)
            assert self.breaker.seconds_until_trial() == pytest.approx(max(0.0, left))
        else:
            assert self.breaker.seconds_until_trial() == 0.0
        assert all(old is not new for _, old, new in self.heard)


BreakerMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_breaker_follows_its_state_machine = BreakerMachine.TestCase


def test_threshold_failures_in_a_row_open_and_a_success_resets_the_count() -> None:
    """Failures open the breaker only when `failure_threshold` come without a success between."""
    breaker = CircuitBreaker(NAME, BreakerPolicy(failure_threshold=2), FakeClock())

    def call(ok: bool) -> None:  # noqa: FBT001 - a test helper
        permit = breaker.allow()
        assert permit is not None
        if ok:
            permit.success()
        else:
            permit.failure()

    call(ok=False)
    call(ok=True)
    call(ok=False)
    assert breaker.state is CLOSED
    call(ok=False)
    assert breaker.state is OPEN


def test_half_open_lets_exactly_one_trial_through_until_it_reports() -> None:
    """After the pause one trial goes through; others wait until the trial's outcome is known."""
    clock = FakeClock()
    breaker = CircuitBreaker(NAME, BreakerPolicy(failure_threshold=1, reset_after_s=10), clock)
    first = breaker.allow()
    assert first is not None
    first.failure()
    clock.advance(9.99)
    assert breaker.allow() is None
    assert breaker.seconds_until_trial() == pytest.approx(0.01)
    clock.advance(0.01)
    trial, *others = [breaker.allow() for _ in range(3)]
    assert trial is not None
    assert trial.trial
    assert others == [None, None]
    assert breaker.state is HALF_OPEN
    trial.release()
    second = breaker.allow()
    assert second is not None
    second.failure()
    assert (breaker.state, breaker.allow()) == (OPEN, None)


def test_a_permit_left_unsettled_by_its_block_is_released() -> None:
    """A trial whose call raised inside `with permit:` makes way for the next trial."""
    clock = FakeClock()
    breaker = CircuitBreaker(NAME, BreakerPolicy(failure_threshold=1, reset_after_s=1), clock)
    opener = breaker.allow()
    assert opener is not None
    opener.failure()
    clock.advance(1)
    trial = breaker.allow()
    assert trial is not None
    with pytest.raises(RuntimeError), trial:
        raise RuntimeError("the call was cancelled")
    assert breaker.allow() is not None


def test_settling_a_permit_twice_changes_nothing() -> None:
    """The first outcome of a permit counts; a second one is ignored."""
    breaker = CircuitBreaker(NAME, BreakerPolicy(failure_threshold=1), FakeClock())
    permit = breaker.allow()
    assert permit is not None
    permit.success()
    permit.failure()
    assert breaker.state is CLOSED


def test_registry_shares_breakers_by_name_and_reports_their_changes() -> None:
    """One breaker per name, created closed; each change reaches the registry's listener."""
    heard: list[Change] = []
    registry = BreakerRegistry(
        BreakerPolicy(failure_threshold=1), FakeClock(), lambda *change: heard.append(change)
    )
    assert registry.get("tool:a") is registry.get("tool:a")
    strict = registry.get("tool:b", BreakerPolicy(failure_threshold=2))
    for breaker in (registry.get("tool:a"), strict):
        permit = breaker.allow()
        assert permit is not None
        permit.failure()
    assert heard == [("tool:a", CLOSED, OPEN)]
    assert strict.state is CLOSED


def test_a_released_non_trial_call_does_not_let_a_second_trial_through() -> None:
    """Releasing a call that is not the trial does not let a second trial through."""
    clock = FakeClock()
    breaker = CircuitBreaker(NAME, BreakerPolicy(failure_threshold=1, reset_after_s=10), clock)
    long_call = breaker.allow()  # a long call starts while closed...
    failing = breaker.allow()  # ...and another one fails: the breaker opens
    assert long_call is not None
    assert failing is not None
    failing.failure()
    clock.advance(10)
    assert breaker.allow() is not None  # the trial
    long_call.release()  # the long call ends with a 400: says nothing about health
    assert breaker.allow() is None, "a second trial went through while the first is in flight"
