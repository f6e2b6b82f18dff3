"""Which run the code running now serves: set around each run, read where runs share state.

The breakers of a process are shared by all its runs, and so are its metrics; what happens in
them is attributed to a run through a context variable. The service sets the run being served
(`serving(...)`) around each run; the breaker listener (`breakers.BreakerEvents`) and the
tracing (`tracing`) read it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class ServedRun:
    """The sub-task a piece of code is working for."""

    task_id: str
    subtask_id: str
    role: str = ""
    kind: str = ""
    """The sub-task's `kind` in the plan ("" when it has none)."""


CURRENT_RUN: ContextVar[ServedRun | None] = ContextVar("hivebus_agent_current_run", default=None)
"""The run the current asyncio task serves (None outside a run)."""


@contextlib.contextmanager
def serving(task_id: str, subtask_id: str, role: str = "", kind: str = "") -> Iterator[None]:
    """Attribute what happens inside the block (breaker changes, metrics) to this sub-task."""
    token = CURRENT_RUN.set(ServedRun(task_id, subtask_id, role, kind))
    try:
        yield
    finally:
        CURRENT_RUN.reset(token)
