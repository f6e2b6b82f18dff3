"""Errors raised by the contracts package, and the one way hivebus words a validation error.

ContractError                 root of every error this package raises (never retryable)
└── IllegalTransition         a status change that the transition table forbids (a bug)
"""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(exc: ValidationError, root: str = "value") -> list[str]:
    """Each problem of a pydantic validation error as `where: what`, in the order found.

    `where` is the dotted location (`plan.subtasks.0.role`), or `root` for the whole value.
    """
    return [
        f"{'.'.join(str(part) for part in err['loc']) or root}: {err['msg']}"
        for err in exc.errors(include_url=False)
    ]


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
