"""The `@tool` decorator: a typed Python function becomes a tool a model can call."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, create_model

from hivebus.agent.errors import ToolDefinitionError
from hivebus.contracts import Tier

DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ToolContext:
    """What a tool may know about the call it serves; declare a parameter of this type to get it.

    `idempotency_key` is stable for one call of one run, so a write tool can apply it once.
    `options` is the configuration's `tool_options` (for example `options["http"]`).
    """

    workspace: Path
    task_id: str
    subtask_id: str
    run_id: str
    step: int
    idempotency_key: str
    options: Mapping[str, Any] = field(default_factory=dict)
    clients: Mapping[str, Any] = field(default_factory=dict)
    """Connections tools may use, by name (`knowledge`: a `KnowledgeClient`)."""
    role: str = "agent"


@dataclass(frozen=True)
class Tool:
    """A callable with a name, a description for the model, typed arguments, a tier, a timeout."""

    name: str
    description: str
    args_model: type[BaseModel]
    tier: Tier
    timeout_s: float
    func: Callable[..., Any]
    context_param: str | None
    needs_approval: bool = False
    """A person must approve every call, whatever the role's tiers say."""
    asks_human: bool = False
    """The call is a question for a person (`ask_human`): the answer is its result."""

    def input_schema(self) -> dict[str, Any]:
        """JSON Schema of the arguments, as models expect it."""
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        return schema

    @property
    def is_async(self) -> bool:
        """Whether the function is a coroutine function."""
        return inspect.iscoroutinefunction(self.func)


def _arguments(func: Callable[..., Any], tool_name: str) -> tuple[type[BaseModel], str | None]:
    """The pydantic model of a tool's arguments, and the name of its `ToolContext` parameter."""
    try:
        hints = get_type_hints(func)
        parameters = inspect.signature(func).parameters.values()
    except NameError as exc:
        raise ToolDefinitionError(
            f"tool {tool_name!r} has an unresolvable annotation: {exc}"
        ) from exc
    except (ValueError, TypeError) as exc:
        raise ToolDefinitionError(f"tool {tool_name!r} has no inspectable signature") from exc
    fields: dict[str, Any] = {}
    context_param = None
    for param in parameters:
        if param.kind in {param.VAR_POSITIONAL, param.VAR_KEYWORD}:
            raise ToolDefinitionError(f"tool {tool_name!r}: *args/**kwargs are not allowed")
        annotation = hints.get(param.name)
        if annotation is None:
            raise ToolDefinitionError(
                f"tool {tool_name!r}: parameter {param.name!r} needs a type annotation"
            )
        if annotation is ToolContext:
            context_param = param.name
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    model = create_model(f"{tool_name}_args", __config__=ConfigDict(extra="forbid"), **fields)
    return model, context_param


def _build_tool(
    func: Callable[..., Any],
    tier: Tier | str,
    timeout_s: float,
    name: str | None,
    *,
    needs_approval: bool = False,
    asks_human: bool = False,
) -> Tool:
    tool_name = name or getattr(func, "__name__", None)
    if not isinstance(tool_name, str) or not tool_name.isidentifier():
        raise ToolDefinitionError(
            f"cannot name the tool {func!r}: pass @tool(name=...) or use a plain function"
        )
    try:
        tool_tier = Tier(tier)
    except ValueError as exc:
        raise ToolDefinitionError(
            f"tool {tool_name!r}: unknown tier {tier!r}; use one of {[t.value for t in Tier]}"
        ) from exc
    description = inspect.cleandoc(func.__doc__ or "").split("\n\n")[0].strip()
    if not description:
        raise ToolDefinitionError(
            f"tool {tool_name!r} has no docstring: its first paragraph is the description "
            "the model reads"
        )
    if timeout_s <= 0:
        raise ToolDefinitionError(f"tool {tool_name!r}: timeout_s must be positive")
    args_model, context_param = _arguments(func, tool_name)
    return Tool(
        name=tool_name,
        description=description,
        args_model=args_model,
        tier=tool_tier,
        timeout_s=timeout_s,
        func=func,
        context_param=context_param,
        needs_approval=needs_approval,
        asks_human=asks_human,
    )


def tool(
    *,
    tier: Tier | str = Tier.DESTRUCTIVE,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    name: str | None = None,
    needs_approval: bool = False,
    asks_human: bool = False,
) -> Callable[[Callable[..., Any]], Tool]:
    """Declare a tool. Without a tier it counts as `destructive`, the most guarded tier.

    `needs_approval=True` makes every call wait for a person's approval, even of a tier the
    role uses freely (a tier it may not use at all stays denied). `asks_human=True` makes the
    call a question: the run pauses, and a person's answer is the call's result (the function
    itself is not called).

    Example:
        @tool(tier="read", timeout_s=5.0)
        def word_count(text: str) -> int:
            '''Count the words in a text.'''
            return len(text.split())
    """

    def decorate(func: Callable[..., Any]) -> Tool:
        return _build_tool(
            func, tier, timeout_s, name, needs_approval=needs_approval, asks_human=asks_human
        )

    return decorate


def as_tool(obj: Any, where: str) -> Tool:
    """Turn an imported object into a tool: a `@tool` as is, a plain function as `destructive`."""
    if isinstance(obj, Tool):
        return obj
    if callable(obj):
        return _build_tool(obj, Tier.DESTRUCTIVE, DEFAULT_TIMEOUT_S, None)
    raise ToolDefinitionError(f"{where} is not a function or a @tool")
