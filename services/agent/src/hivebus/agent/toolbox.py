"""A role's tools: loaded from `module:function` names, called with validation, tier and timeout.

Tool code may raise anything; `Toolbox.call` always returns a `ToolResult`.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from hivebus.agent.errors import ToolDefinitionError, ToolFailure
from hivebus.agent.tool import Tool, ToolContext, as_tool
from hivebus.agent.validators.secrets import redact_secrets
from hivebus.contracts import Tier, ToolErrorKind, ToolResult
from hivebus.core import get_logger

log = get_logger(__name__)

TIER_ORDER = (Tier.READ, Tier.WRITE_SAFE, Tier.WRITE_RISKY, Tier.DESTRUCTIVE)


def load_tool(ref: str) -> Tool:
    """Import `module:function` and return it as a tool."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ToolDefinitionError(
            f"tool reference {ref!r} must look like 'package.module:function'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ToolDefinitionError(f"cannot import tool module {module_name!r}: {exc}") from exc
    try:
        obj = getattr(module, attr)
    except AttributeError as exc:
        raise ToolDefinitionError(f"module {module_name!r} has no tool {attr!r}") from exc
    return as_tool(obj, ref)


def _format_validation(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
        for err in exc.errors()
    )


class Toolbox:
    """The tools of one role, and the tiers it may use."""

    def __init__(self, tools: Iterable[Tool], allowed_tiers: Iterable[Tier]) -> None:
        """Index tools by name; refuse two tools with one name."""
        self.tools: dict[str, Tool] = {}
        for item in tools:
            if item.name in self.tools:
                raise ToolDefinitionError(f"two tools are named {item.name!r}")
            self.tools[item.name] = item
        self.allowed_tiers = frozenset(allowed_tiers)

    @classmethod
    def from_refs(cls, refs: Iterable[str], allowed_tiers: Iterable[Tier]) -> Toolbox:
        """Load every `module:function` reference."""
        return cls((load_tool(ref) for ref in refs), allowed_tiers)

    def specs(self) -> list[Tool]:
        """The tools, in a stable order, for the model's tool list."""
        return [self.tools[name] for name in sorted(self.tools)]

    async def call(
        self, name: str, args: Any, context: ToolContext, timeout_s: float | None = None
    ) -> ToolResult:
        """Run one tool call and return its structured result; never raises for tool faults."""
        found = self.tools.get(name)
        if found is None:
            return ToolResult.failure(
                ToolErrorKind.UNKNOWN_TOOL,
                f"there is no tool named {name!r}",
                f"use one of: {', '.join(sorted(self.tools)) or '(no tools)'}",
            )
        if found.tier not in self.allowed_tiers:
            return ToolResult.failure(
                ToolErrorKind.DENIED,
                f"tool {name!r} has tier {found.tier.value!r}, which this role may not use",
                "finish without this action, or say in your answer that it needs a person",
            )
        if not isinstance(args, dict):
            return ToolResult.failure(
                ToolErrorKind.INVALID_ARGUMENTS,
                f"arguments for {name!r} must be a JSON object, not {type(args).__name__}",
                "pass the arguments as an object matching the tool's input schema",
            )
        try:
            parsed = found.args_model.model_validate(args)
        except ValidationError as exc:
            return ToolResult.failure(
                ToolErrorKind.INVALID_ARGUMENTS,
                f"invalid arguments for {name!r}: {_format_validation(exc)}",
                "fix the arguments to match the tool's input schema and call it again",
            )
        kwargs = dict(parsed)
        if found.context_param is not None:
            kwargs[found.context_param] = context
        limit = found.timeout_s if timeout_s is None else min(found.timeout_s, timeout_s)
        return await self._invoke(found, kwargs, limit)

    async def _invoke(self, found: Tool, kwargs: dict[str, Any], limit: float) -> ToolResult:
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                if found.is_async:
                    value = await found.func(**kwargs)
                else:
                    value = await asyncio.to_thread(functools.partial(found.func, **kwargs))
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
        try:
            return ToolResult.success(to_jsonable_python(value))
        except Exception as exc:  # noqa: BLE001 - an unserializable result is a tool bug
            return ToolResult.failure(
                ToolErrorKind.PERMANENT,
                f"tool {found.name!r} returned a value that is not JSON: {type(exc).__name__}",
                "continue without this result",
            )
