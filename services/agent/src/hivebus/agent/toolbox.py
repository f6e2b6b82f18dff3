"""A role's tools: loaded from `module:function` names, called with validation, tier and timeout.

Tool code may raise anything; `Toolbox.call` always returns a `ToolResult`. A call the tier
policy says must be approved runs only when the caller says a person approved it
(`approved=True`: the tool turn, after the run's pause); otherwise it is `denied`.

Synchronous tools run on the toolbox's own bounded thread pool. A thread cannot be stopped,
so a sync tool that outlives its timeout keeps its thread until it returns by itself: it is
*abandoned* (counted in `abandoned_threads`, logged as `tool_thread_abandoned`). The pool has
room for `max_abandoned_threads` of them plus one call per concurrent run, so stuck threads
never make a healthy call wait; once the bound is reached, new sync calls are answered at once
with a `transient` error instead of queueing behind threads that may never come back.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from hivebus.agent.errors import ToolDefinitionError, ToolFailure
from hivebus.agent.tiers import TierDecision, TierPolicy
from hivebus.agent.tool import Tool, ToolContext, as_tool
from hivebus.agent.validators.secrets import redact_secrets
from hivebus.contracts import Tier, ToolErrorKind, ToolResult, describe_validation_error
from hivebus.core import get_logger
from hivebus.core.loader import load_reference

if TYPE_CHECKING:
    from hivebus.agent.replay import ToolRunner

log = get_logger(__name__)

DEFAULT_MAX_ABANDONED_THREADS = 8
"""Sync tool threads still running after their call timed out, before new sync calls are refused
(the service passes `Settings.max_abandoned_tool_threads`)."""


def load_tool(ref: str) -> Tool:
    """Import `module:function` and return it as a tool."""
    return as_tool(load_reference(ref, what="tool", error=ToolDefinitionError), ref)


class Toolbox:
    """The tools of one role, and the tiers it may use (freely, or with a person's approval)."""

    def __init__(
        self,
        tools: Iterable[Tool],
        allowed_tiers: Iterable[Tier],
        *,
        approve_tiers: Iterable[Tier] = (),
        max_abandoned_threads: int = DEFAULT_MAX_ABANDONED_THREADS,
        concurrency: int = 1,
    ) -> None:
        """Index tools by name; refuse two tools with one name.

        `concurrency` is how many runs call tools at once (the role's `concurrency`): the
        thread pool holds that many threads besides the abandoned ones.
        """
        self.tools: dict[str, Tool] = {}
        for item in tools:
            if item.name in self.tools:
                raise ToolDefinitionError(f"two tools are named {item.name!r}")
            self.tools[item.name] = item
        self.tiers = TierPolicy.of(allowed_tiers, approve_tiers)
        self.max_abandoned_threads = max_abandoned_threads
        self._threads = ThreadPoolExecutor(
            max_workers=max_abandoned_threads + concurrency, thread_name_prefix="hivebus-tool"
        )
        self._lock = threading.Lock()
        self._abandoned = 0
        self.runner: ToolRunner | None = None
        """A golden replay's recorded answers, in place of the tools (`hivebus.agent.replay`)."""

    @classmethod
    def from_refs(
        cls,
        refs: Iterable[str],
        allowed_tiers: Iterable[Tier],
        *,
        approve_tiers: Iterable[Tier] = (),
        max_abandoned_threads: int = DEFAULT_MAX_ABANDONED_THREADS,
        concurrency: int = 1,
    ) -> Toolbox:
        """Load every `module:function` reference."""
        return cls(
            (load_tool(ref) for ref in refs),
            allowed_tiers,
            approve_tiers=approve_tiers,
            max_abandoned_threads=max_abandoned_threads,
            concurrency=concurrency,
        )

    @property
    def abandoned_threads(self) -> int:
        """Sync tool threads still running after their call timed out."""
        return self._abandoned

    def specs(self) -> list[Tool]:
        """The tools, in a stable order, for the model's tool list."""
        return [self.tools[name] for name in sorted(self.tools)]

    def decide(self, name: str) -> TierDecision | None:
        """What the tier policy says about a call of `name` (None: there is no such tool)."""
        found = self.tools.get(name)
        if found is None:
            return None
        return self.tiers.decide(
            found.tier, needs_approval=found.needs_approval, asks_human=found.asks_human
        )

    def invalid(self, name: str, args: Any) -> ToolResult | None:
        """The `invalid_arguments` result `args` would get from `name`, or None if they fit."""
        found = self.tools.get(name)
        if found is None:
            return None
        parsed = self._parse(found, args)
        return parsed if isinstance(parsed, ToolResult) else None

    @staticmethod
    def _parse(found: Tool, args: Any) -> BaseModel | ToolResult:
        if not isinstance(args, dict):
            return ToolResult.failure(
                ToolErrorKind.INVALID_ARGUMENTS,
                f"arguments for {found.name!r} must be a JSON object, not {type(args).__name__}",
                "pass the arguments as an object matching the tool's input schema",
            )
        try:
            return found.args_model.model_validate(args)
        except ValidationError as exc:
            return ToolResult.failure(
                ToolErrorKind.INVALID_ARGUMENTS,
                f"invalid arguments for {found.name!r}: "
                + "; ".join(describe_validation_error(exc, "arguments")),
                "fix the arguments to match the tool's input schema and call it again",
            )

    async def call(
        self,
        name: str,
        args: Any,
        context: ToolContext,
        timeout_s: float | None = None,
        *,
        approved: bool = False,
    ) -> ToolResult:
        """Run one tool call and return its structured result; never raises for tool faults.

        `approved` says a person approved this call; a call that needs approval runs only then.
        """
        found = self.tools.get(name)
        if found is None:
            return ToolResult.failure(
                ToolErrorKind.UNKNOWN_TOOL,
                f"there is no tool named {name!r}",
                f"use one of: {', '.join(sorted(self.tools)) or '(no tools)'}",
            )
        decision = self.decide(name)
        if decision is TierDecision.DENY:
            return self.tiers.denied(name, found.tier)
        parsed = self._parse(found, args)
        if isinstance(parsed, ToolResult):
            return parsed
        if decision is TierDecision.APPROVE and not approved:
            return self.tiers.unapproved(name)
        if self.runner is not None:
            return await self.runner(name, args, context)
        return await self._run(found, parsed, context, timeout_s)

    async def _run(
        self, found: Tool, parsed: BaseModel, context: ToolContext, timeout_s: float | None
    ) -> ToolResult:
        """Call the tool with its parsed arguments (and its context, when it asks for it)."""
        kwargs = dict(parsed)
        if found.context_param is not None:
            kwargs[found.context_param] = context
        if not found.is_async and self._abandoned >= self.max_abandoned_threads:
            return self._too_many_stuck(found.name)
        limit = found.timeout_s if timeout_s is None else min(found.timeout_s, timeout_s)
        return await self._invoke(found, kwargs, limit)

    def _too_many_stuck(self, name: str) -> ToolResult:
        """A sync call refused at once: its thread would queue behind ones that may never end."""
        return ToolResult.failure(
            ToolErrorKind.TRANSIENT,
            f"too many tool threads are stuck ({self._abandoned} of at most "
            f"{self.max_abandoned_threads} still running after their calls timed out); "
            f"tool {name!r} was not called",
            "try again later, use another tool, or continue without this result",
        )

    async def _invoke(self, found: Tool, kwargs: dict[str, Any], limit: float) -> ToolResult:
        deadline = asyncio.timeout(limit)
        thread: Future[Any] | None = None
        try:
            async with deadline:
                if found.is_async:
                    value = await found.func(**kwargs)
                else:
                    # The tool sees the caller's context variables (bound log ids), as with
                    # `asyncio.to_thread`.
                    call = functools.partial(found.func, **kwargs)
                    thread = self._threads.submit(contextvars.copy_context().run, call)
                    value = await asyncio.wrap_future(thread)
        except TimeoutError as exc:
            if not deadline.expired():  # the tool's own timeout (a socket, say): transient
                return ToolResult.failure(
                    ToolErrorKind.TRANSIENT,
                    f"tool {found.name!r} timed out inside: {exc or 'TimeoutError'}",
                    "try again later, or continue without this result",
                )
            return ToolResult.failure(
                ToolErrorKind.TIMEOUT,
                f"tool {found.name!r} did not finish within {limit:g}s",
                "try smaller input, or continue without this result",
            )
        except ToolFailure as exc:
            return ToolResult.failure(exc.kind, str(exc), exc.suggestion)
        except Exception as exc:  # noqa: BLE001 - tool code may raise anything; it never escapes
            log.warning("tool_raised", tool=found.name, error=redact_secrets(repr(exc)))
            return ToolResult.failure(
                ToolErrorKind.PERMANENT,
                redact_secrets(f"tool {found.name!r} failed: {type(exc).__name__}: {exc}"),
                "do not repeat the same call; try other arguments or another approach",
            )
        finally:
            if thread is not None and not thread.done():
                self._abandon(found.name, thread)
        try:
            return ToolResult.success(to_jsonable_python(value))
        except Exception as exc:  # noqa: BLE001 - an unserializable result is a tool bug
            return ToolResult.failure(
                ToolErrorKind.PERMANENT,
                f"tool {found.name!r} returned a value that is not JSON: {type(exc).__name__}",
                "continue without this result",
            )

    def _abandon(self, name: str, thread: Future[Any]) -> None:
        """Count a thread left running by a timed-out call until it returns by itself."""
        with self._lock:
            self._abandoned += 1
            count = self._abandoned
        log.warning(
            "tool_thread_abandoned", tool=name, abandoned=count, bound=self.max_abandoned_threads
        )
        thread.add_done_callback(functools.partial(self._returned, name))

    def _returned(self, name: str, _thread: Future[Any]) -> None:
        # Runs in the worker thread, or at once if the thread returned meanwhile.
        with self._lock:
            self._abandoned -= 1
            count = self._abandoned
        log.info("tool_thread_returned", tool=name, abandoned=count)
