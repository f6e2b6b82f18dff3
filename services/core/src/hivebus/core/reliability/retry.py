"""Retry transient failures with exponential backoff and jitter, bounded in attempts and time.

Only errors whose `retryable` attribute is True are retried (timeouts, connection errors,
429, 5xx); anything else — a 4xx, a policy refusal, a bug — is raised at once. Each retry is
reported through `on_retry`, so it can be recorded in the step it belongs to.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

ResultT = TypeVar("ResultT")


class RetryPolicy(BaseModel):
    """How often and how patiently to retry a transient failure."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    attempts: int = Field(
        default=3, ge=1, le=20, description="Attempts in all, the first included."
    )
    initial_s: float = Field(default=0.5, ge=0, description="First backoff delay.")
    max_s: float = Field(default=8.0, ge=0, description="Largest backoff delay.")
    jitter_s: float = Field(default=0.5, ge=0, description="Random extra delay, up to this much.")


@dataclass(frozen=True)
class RetryAttempt:
    """One failed attempt that will be retried: which, why, and after how long."""

    attempt: int
    error: str
    delay_s: float


def is_retryable(exc: BaseException) -> bool:
    """Whether an error says a retry can help."""
    return bool(getattr(exc, "retryable", False))


def _retry_after(exc: BaseException | None) -> float:
    value = getattr(exc, "retry_after_s", None)
    return float(value) if isinstance(value, int | float) and value > 0 else 0.0


async def retry_transient(
    call: Callable[[], Awaitable[ResultT]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]],
    time_left: Callable[[], float],
    on_retry: Callable[[RetryAttempt], None],
) -> ResultT:
    """Run `call`, retrying retryable errors per `policy`, never sleeping past `time_left()`.

    A server's `retry_after_s` (from a 429's `retry-after`) lengthens the delay, up to
    `policy.max_s`. The last error is raised when attempts or time run out.
    """
    backoff = wait_exponential_jitter(
        multiplier=policy.initial_s, max=policy.max_s, jitter=policy.jitter_s
    )

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return min(max(backoff(state), _retry_after(error)), max(policy.max_s, 0.0))

    def stop(state: RetryCallState) -> bool:
        if stop_after_attempt(policy.attempts)(state):
            return True
        # tenacity draws the delay (jitter included) before asking whether to stop.
        return state.upcoming_sleep >= time_left()

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        on_retry(RetryAttempt(state.attempt_number, str(error), round(delay, 3)))

    retrying = AsyncRetrying(
        stop=stop,
        wait=wait,
        retry=retry_if_exception(is_retryable),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    result: ResultT = await retrying(call)
    return result
