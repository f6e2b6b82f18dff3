"""Errors raised by the contracts package.

ContractError                 root of every error this package raises
└── IllegalTransition         a status change that the transition table forbids (a bug)
"""

from __future__ import annotations


class ContractError(Exception):
    """Root of the errors raised by `hivebus.contracts`."""

    retryable = False


class IllegalTransitionError(ContractError):
    """A status change the transition table does not allow; raising it means a bug upstream."""

    def __init__(self, kind: str, current: str, target: str) -> None:
        """Name the state machine and the two statuses involved."""
        super().__init__(f"illegal {kind} transition {current!r} -> {target!r}")
        self.kind = kind
        self.current = current
        self.target = target
