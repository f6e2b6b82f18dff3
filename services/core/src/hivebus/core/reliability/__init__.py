"""Reliability primitives: retry with backoff for transient errors, circuit breakers."""

from hivebus.core.reliability.breaker import (
    BreakerPolicy,
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
    Permit,
)
from hivebus.core.reliability.retry import RetryAttempt, RetryPolicy, retry_transient

__all__ = [
    "BreakerPolicy",
    "BreakerRegistry",
    "BreakerState",
    "CircuitBreaker",
    "Permit",
    "RetryAttempt",
    "RetryPolicy",
    "retry_transient",
]
