"""One tool call inside a run: its breaker, retries of transient failures, loop detection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hivebus.agent.errors import AgentError
from hivebus.agent.tool import ToolContext
from hivebus.agent.toolbox import Toolbox
from hivebus.contracts import RetryRecord, ToolErrorKind, ToolResult
from hivebus.core.reliability import BreakerRegistry, BreakerState, RetryPolicy, retry_transient
from hivebus.core.reliability.retry import RetryAttempt

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
    notes: list[str] = field(default_factory=list)
    breaker_changes: list[tuple[str, BreakerState, BreakerState]] = field(default_factory=list)


def call_signature(name: str, args: Any) -> str:
    """A canonical form of a call, to recognise the same call with the same arguments."""
    return f"{name}:{json.dumps(args, sort_keys=True, default=str)}"


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
        self, name: str, args: Any, context: ToolContext, time_left: Callable[[], float]
    ) -> ToolStep:
        """Call a tool; transient failures are retried, a tool whose breaker is open is not."""
        found = self.toolbox.tools.get(name)
        breaker = self.breakers.get(f"tool:{name}") if found is not None else None
        # A timeout caused by the run running out of time says nothing about the tool's health.
        cut_by_run = found is not None and time_left() < found.timeout_s
        trial = False
        step = ToolStep(result=ToolResult.success(None))
        if breaker is not None:
            before = breaker.state
            allowed = breaker.allow()
            trial = breaker.granted_trial
            _note(step, breaker.name, before, breaker.state)
            if not allowed:
                wait = breaker.seconds_until_trial()
                step.result = ToolResult.failure(
                    ToolErrorKind.TRANSIENT,
                    f"tool {name!r} is failing repeatedly and is switched off for {wait:.0f}s",
                    "continue without this tool, or give your answer with what you have",
                )
                return step

        async def once() -> ToolResult:
            result = await self.toolbox.call(name, args, context, max(time_left(), 0.001))
            if result.error is not None and result.error.kind == ToolErrorKind.TRANSIENT:
                raise _TransientError(result)
            return result

        def record(attempt: RetryAttempt) -> None:
            step.retries.append(
                RetryRecord(
                    target=name,
                    attempt=attempt.attempt,
                    error=attempt.error,
                    delay_s=attempt.delay_s,
                )
            )

        try:
            step.result = await retry_transient(
                once, self.retry, sleep=self.sleep, time_left=time_left, on_retry=record
            )
        except _TransientError as exc:
            step.result = exc.result
        if breaker is not None:
            before = breaker.state
            kind = step.result.error.kind if step.result.error is not None else None
            if kind in UNHEALTHY and not (kind == ToolErrorKind.TIMEOUT and cut_by_run):
                breaker.record_failure()
            elif step.result.ok:
                breaker.record_success()
            else:
                breaker.release(trial=trial)
            _note(step, breaker.name, before, breaker.state)
        return step


def _note(step: ToolStep, name: str, old: BreakerState, new: BreakerState) -> None:
    if old != new:
        step.breaker_changes.append((name, old, new))
        step.notes.append(f"breaker {name}: {old.value} -> {new.value}")
