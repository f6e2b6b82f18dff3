"""`retry_transient`: which errors are retried, how often, after how long, and never past time."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hivebus.core.reliability import RetryAttempt, RetryPolicy, retry_transient

HYPOTHESIS = settings(max_examples=150, deadline=None)
EPS = 1e-9


class TransientError(Exception):
    """A failure a retry can help with (a 429, a 5xx, a timeout)."""

    retryable = True

    def __init__(self, n: int, retry_after_s: float | None = None) -> None:
        """Failure number `n`, maybe with the server's `retry-after`."""
        super().__init__(f"transient failure {n}")
        self.n = n
        self.retry_after_s = retry_after_s


class RefusedError(Exception):
    """A failure a retry cannot help with (a 4xx, a policy refusal)."""

    retryable = False


class FakeTime:
    """Seconds that pass only when the code under test sleeps; a budget of time to spend."""

    def __init__(self, budget_s: float = math.inf) -> None:
        """Start at zero with `budget_s` seconds to spend."""
        self.now = 0.0
        self.budget_s = budget_s
        self.delays: list[float] = []
        self.left_at_sleep: list[float] = []

    async def sleep(self, seconds: float) -> None:
        """Record the delay and the time that was left, then move time forward."""
        self.left_at_sleep.append(self.time_left())
        self.delays.append(seconds)
        self.now += seconds

    def time_left(self) -> float:
        """What is left of the budget."""
        return self.budget_s - self.now


class Flaky:
    """Fails with the given errors, one per call, then answers "ok"."""

    def __init__(self, errors: list[Exception]) -> None:
        """Raise these, in order."""
        self.errors = iter(errors)
        self.calls = 0

    async def __call__(self) -> str:
        """One attempt."""
        self.calls += 1
        error = next(self.errors, None)
        if error is not None:
            raise error
        return "ok"


def transient(count: int, retry_after_s: float | None = None) -> list[Exception]:
    """`count` transient errors numbered 1, 2, ..."""
    return [TransientError(n, retry_after_s) for n in range(1, count + 1)]


async def attempt(
    flaky: Flaky, policy: RetryPolicy, clock: FakeTime
) -> tuple[str | BaseException, list[RetryAttempt]]:
    """Run `flaky` under `policy`; return its result or error, and every retry reported."""
    seen: list[RetryAttempt] = []
    try:
        result: str | BaseException = await retry_transient(
            flaky, policy, sleep=clock.sleep, time_left=clock.time_left, on_retry=seen.append
        )
    except Exception as exc:  # noqa: BLE001 - the error is the result under test
        result = exc
    return result, seen


@pytest.mark.parametrize(
    "error",
    [RefusedError("400 bad request"), ValueError("a bug")],
    ids=["not-retryable", "no-retryable-attribute"],
)
async def test_only_retryable_errors_are_retried(error: Exception) -> None:
    """An error that does not say it is retryable is raised at once: one call, no sleep."""
    flaky = Flaky([error])
    clock = FakeTime()
    result, seen = await attempt(flaky, RetryPolicy(attempts=5), clock)
    assert result is error
    assert (flaky.calls, clock.delays, seen) == (1, [], [])


async def test_a_transient_error_is_retried_until_the_call_succeeds() -> None:
    """Transient failures are retried, each reported with its attempt, error and delay."""
    flaky = Flaky([TransientError(1), TransientError(2)])
    clock = FakeTime()
    policy = RetryPolicy(attempts=3, initial_s=0.5, max_s=8, jitter_s=0)
    result, seen = await attempt(flaky, policy, clock)
    assert result == "ok"
    assert flaky.calls == 3
    assert seen == [
        RetryAttempt(attempt=1, error="transient failure 1", delay_s=0.5),
        RetryAttempt(attempt=2, error="transient failure 2", delay_s=1.0),
    ]
    assert clock.delays == [0.5, 1.0]


@HYPOTHESIS
@given(attempts=st.integers(min_value=1, max_value=8))
async def test_attempts_are_bounded_and_the_last_error_is_raised(attempts: int) -> None:
    """A call that keeps failing is tried `attempts` times; the last error is the one raised."""
    flaky = Flaky(transient(attempts + 5))
    clock = FakeTime()
    result, seen = await attempt(flaky, RetryPolicy(attempts=attempts, jitter_s=0), clock)
    assert isinstance(result, TransientError)
    assert result.n == attempts
    assert flaky.calls == attempts
    assert [s.attempt for s in seen] == list(range(1, attempts))
    assert [s.delay_s for s in seen] == pytest.approx(clock.delays)


@HYPOTHESIS
@given(
    initial_s=st.floats(min_value=0.01, max_value=2),
    jitter_s=st.floats(min_value=0, max_value=1),
    max_s=st.floats(min_value=0.01, max_value=60),
    attempts=st.integers(min_value=2, max_value=8),
)
async def test_delays_grow_exponentially_with_bounded_jitter(
    initial_s: float, jitter_s: float, max_s: float, attempts: int
) -> None:
    """The n-th delay is `initial_s * 2**(n-1)` plus up to `jitter_s`, never above `max_s`."""
    policy = RetryPolicy(attempts=attempts, initial_s=initial_s, max_s=max_s, jitter_s=jitter_s)
    clock = FakeTime()
    flaky = Flaky(transient(attempts))
    await attempt(flaky, policy, clock)
    assert len(clock.delays) == attempts - 1
    for n, delay in enumerate(clock.delays, start=1):
        base = initial_s * 2 ** (n - 1)
        assert min(base, max_s) - EPS <= delay <= min(base + jitter_s, max_s) + EPS


async def test_without_jitter_each_delay_doubles_until_the_cap() -> None:
    """With no jitter the delays are exactly 0.5, 1, 2, 4, then held at `max_s`."""
    policy = RetryPolicy(attempts=7, initial_s=0.5, max_s=5, jitter_s=0)
    clock = FakeTime()
    await attempt(Flaky(transient(7)), policy, clock)
    assert clock.delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


@HYPOTHESIS
@given(
    retry_after_s=st.floats(min_value=0, max_value=120),
    initial_s=st.floats(min_value=0.01, max_value=2),
    max_s=st.floats(min_value=0.01, max_value=60),
)
async def test_retry_after_lengthens_the_delay_up_to_max_s(
    retry_after_s: float, initial_s: float, max_s: float
) -> None:
    """A server's `retry_after_s` replaces a shorter backoff, but never beyond `max_s`."""
    policy = RetryPolicy(attempts=2, initial_s=initial_s, max_s=max_s, jitter_s=0)
    clock = FakeTime()
    result, seen = await attempt(Flaky([TransientError(1, retry_after_s)]), policy, clock)
    assert result == "ok"
    expected = min(max(initial_s, retry_after_s), max_s)
    assert clock.delays == [pytest.approx(expected)]
    assert seen[0].delay_s == pytest.approx(expected, abs=1e-3)


@HYPOTHESIS
@given(
    budget_s=st.floats(min_value=0, max_value=30),
    initial_s=st.floats(min_value=0.01, max_value=4),
    max_s=st.floats(min_value=0.01, max_value=20),
    retry_after_s=st.one_of(st.none(), st.floats(min_value=0, max_value=30)),
    attempts=st.integers(min_value=1, max_value=10),
)
async def test_never_sleeps_past_the_time_left(
    budget_s: float,
    initial_s: float,
    max_s: float,
    retry_after_s: float | None,
    attempts: int,
) -> None:
    """Each sleep is shorter than the time left; otherwise the last error is raised."""
    policy = RetryPolicy(attempts=attempts, initial_s=initial_s, max_s=max_s, jitter_s=0)
    clock = FakeTime(budget_s)
    flaky = Flaky(transient(attempts, retry_after_s))
    result, seen = await attempt(flaky, policy, clock)
    assert isinstance(result, TransientError)
    assert all(d < left for d, left in zip(clock.delays, clock.left_at_sleep, strict=True))
    assert clock.now <= budget_s
    assert len(seen) == len(clock.delays) == flaky.calls - 1


async def test_jitter_never_sleeps_past_the_time_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """With jitter, the delay checked against the time left is the delay then slept."""
    draws = iter([1.0, 0.0] * 5)  # the delay slept draws full jitter, the stop check none
    monkeypatch.setattr("tenacity.wait.random.uniform", lambda _lo, _hi: next(draws))
    policy = RetryPolicy(attempts=2, initial_s=1.0, max_s=10, jitter_s=1.0)
    clock = FakeTime(budget_s=1.5)
    flaky = Flaky([TransientError(1), TransientError(2)])
    await attempt(flaky, policy, clock)
    assert all(d < left for d, left in zip(clock.delays, clock.left_at_sleep, strict=True)), (
        f"slept {clock.delays} with {clock.left_at_sleep} left"
    )
