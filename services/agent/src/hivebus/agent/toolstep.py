"""One tool call inside a run: its breaker permit, retries of transient failures.

unknown tool             -> the toolbox answers `unknown_tool` (no breaker)
no breaker permit        -> `transient` "switched off" without calling the tool
call, retrying transient results (backoff + jitter, bounded by attempts and time)
transient or timeout     -> the permit fails (unless the run's own time cut the call)
ok                       -> the permit succeeds
any other result         -> the permit is released: the caller's fault, not the tool's
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hivebus.agent.errors import AgentError
from hivebus.agent.tool import ToolContext
from hivebus.agent.toolbox import Toolbox
from hivebus.agent.tracing import retried
from hivebus.contracts import RetryRecord, ToolErrorKind, ToolResult
from hivebus.core.reliability import (
    BreakerRegistry,
    Permit,
    RetryAttempt,
    RetryPolicy,
    retry_transient,
)

UNHEALTHY = frozenset({ToolErrorKind.TRANSIENT, ToolErrorKind.TIMEOUT})
"""Failures that say the tool is unwell (counted by its breaker); the others are the caller's."""


class _TransientError(AgentError):
    """A transient tool failure, raised only to drive the retry loop."""

    retryable = True

    def __init__(self, result: ToolResult) -> None:
        super().__init__(result.error.message if result.error else "transient failure")
        self.result = result


@dataclass
class ToolStep:
    """What happened around one tool call."""

    result: ToolResult
    retries: list[RetryRecord] = field(default_factory=list)


class ToolRunner:
    """Runs tool calls through breakers and retries."""

    def __init__(
        self,
        toolbox: Toolbox,
        *,
        breakers: BreakerRegistry,
        retry: RetryPolicy,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Use `toolbox`'s tools."""
        self.toolbox = toolbox
        self.breakers = breakers
        self.retry = retry
        self.sleep = sleep

    async def call(
        self,
        name: str,
        args: Any,
        context: ToolContext,
        time_left: Callable[[], float],
        *,
        approved: bool = False,
    ) -> ToolStep:
        """Call a tool; transient failures are retried, a tool whose breaker is open is not.

        `approved`: a person approved this call (see `Toolbox.call`).
        """
        found = self.toolbox.tools.get(name)
        # A timeout caused by the run running out of time says nothing about the tool's health.
        cut_by_run = found is not None and time_left() < found.timeout_s
        step = ToolStep(result=ToolResult.success(None))
        permit: Permit | None = None
        if found is not None:
            breaker = self.breakers.get(f"tool:{name}")
            permit = breaker.allow()
            if permit is None:
                wait = breaker.seconds_until_trial()
                step.result = ToolResult.failure(
                    ToolErrorKind.TRANSIENT,
                    f"tool {name!r} is failing repeatedly and is switched off for {wait:.0f}s",
                    "continue without this tool, or give your answer with what you have",
                )
                return step

        async def once() -> ToolResult:
            result = await self.toolbox.call(
                name, args, context, max(time_left(), 0.001), approved=approved
            )
            if result.error is not None and result.error.kind == ToolErrorKind.TRANSIENT:
                raise _TransientError(result)
            return result

        def record(attempt: RetryAttempt) -> None:
            retried("tool", name, attempt)
            step.retries.append(
                RetryRecord(
                    target=name,
                    attempt=attempt.attempt,
                    error=attempt.error,
                    delay_s=attempt.delay_s,
                )
            )

        try:
            try:
                step.result = await retry_transient(
                    once, self.retry, sleep=self.sleep, time_left=time_left, on_retry=record
                )
            except _TransientError as exc:
                step.result = exc.result
            if permit is not None:
                _settle(permit, step.result, cut_by_run=cut_by_run)
        finally:
            if permit is not None:
                permit.release()  # a call cancelled or crashed says nothing about health
        return step


def _settle(permit: Permit, result: ToolResult, *, cut_by_run: bool) -> None:
    kind = result.error.kind if result.error is not None else None
    if kind in UNHEALTHY and not (kind == ToolErrorKind.TIMEOUT and cut_by_run):
        permit.failure()
    elif result.ok:
        permit.success()
    else:
        permit.release()
