"""Reliability primitives: retry with backoff for transient errors, circuit breakers."""

from hivebus.core.reliability.breaker import (
    BreakerPolicy,
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
)
from hivebus.core.reliability.retry import RetryAttempt, RetryPolicy, retry_transient

__all__ = [
    "BreakerPolicy",
    "BreakerRegistry",
    "BreakerState",
    "CircuitBreaker",
    "RetryAttempt",
    "RetryPolicy",
    "retry_transient",
]
