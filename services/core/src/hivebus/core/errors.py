"""Errors raised by hivebus-core.

CoreError                     root; `retryable` tells the caller whether trying again can help
├── ConfigError               hivebus.yaml or settings are wrong (not retryable)
├── EmbeddedServerError       the embedded nats-server did not start or stop (not retryable)
├── CasConflictError          compare-and-set lost the race too many times (retryable)
├── UndecodableError          a message body too large, too deep or not JSON (not retryable)
└── SupersededError           another holder owns the message now: leave it to that holder
"""

from __future__ import annotations


class CoreError(Exception):
    """Root of the errors raised by `hivebus.core`."""

    retryable = False


class ConfigError(CoreError):
    """The configuration is invalid; the message says which field and why."""


class EmbeddedServerError(CoreError):
    """The embedded nats-server could not be started or stopped."""


class CasConflictError(CoreError):
    """A compare-and-set update kept losing to concurrent writers within its bounded attempts."""

    retryable = True


class UndecodableError(CoreError):
    """A message that can never be decoded: too large, nested too deeply, or not JSON."""


class SupersededError(CoreError):
    """Another holder owns the message now (this one was fenced): it must not settle it.

    Settling would act on a delivery that another worker is processing; that worker settles.
    """
