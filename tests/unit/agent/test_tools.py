"""The `@tool` decorator and `Toolbox.call`: tool faults always come back as a `ToolResult`."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from hivebus.agent.errors import ToolDefinitionError, ToolFailure
from hivebus.agent.tool import DEFAULT_TIMEOUT_S, Tool, ToolContext, as_tool, tool
from hivebus.agent.toolbox import Toolbox, load_tool
from hivebus.contracts import Tier, ToolErrorKind

ALL_TIERS = list(Tier)


@tool(tier="read", timeout_s=5.0)
def word_count(text: str, min_length: int = 0) -> int:
    """Count the words in a text.

    Words shorter than `min_length` are not counted. This paragraph is for people, not the model.
    """
    return sum(1 for word in text.split() if len(word) >= min_length)


@tool(tier="read")
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool(tier="write_safe")
def whoami(label: str, context: ToolContext) -> dict[str, Any]:
    """Say which run and step called this tool."""
    return {"label": label, "run_id": context.run_id, "key": context.idempotency_key}


@tool(tier="read")
def explode(reason: str) -> str:
    """Fail with the given reason."""
    raise ValueError(reason)


@tool(tier="read")
async def explode_async(reason: str) -> str:
    """Fail with the given reason, asynchronously."""
    await asyncio.sleep(0)
    raise RuntimeError(reason)


@tool(tier="read")
def refuse(reason: str) -> str:
    """Refuse on purpose with a structured error."""
    raise ToolFailure(reason, "ask for something else", ToolErrorKind.TRANSIENT)


class Summary(BaseModel):
    """A typed tool output."""

    words: int
    where: Path


@tool(tier="read")
def summarize(text: str) -> dict[str, Any]:
    """Summarize a text into JSON-able parts."""
    return {
        "summary": Summary(words=len(text.split()), where=Path("notes/a.md")),
        "pair": (1, 2),
        "tags": ["x"],
    }


@tool(tier="read")
def opaque() -> object:
    """Return something that has no JSON form."""
    return object()


def no_docstring(text: str) -> str:  # noqa: D103 - the missing docstring is what is tested
    return text


def unannotated(text) -> str:  # type: ignore[no-untyped-def]  # noqa: ANN001 - under test
    """Echo the text."""
    return str(text)


def plain_function(text: str) -> str:
    """Echo the text back."""
    return text


def many(*texts: str) -> str:
    """Join texts."""
    return "".join(texts)


# --- @tool ------------------------------------------------------------------------------------


def test_tool_takes_name_description_tier_and_timeout_from_declaration() -> None:
    """The function name, the docstring's first paragraph, tier and timeout make the tool."""
    assert isinstance(word_count, Tool)
    assert word_count.name == "word_count"
    assert word_count.description == "Count the words in a text."
    assert word_count.tier is Tier.READ
    assert word_count.timeout_s == 5.0
    assert word_count.context_param is None
    assert not word_count.is_async


def test_tool_input_schema_is_a_strict_json_object_schema() -> None:
    """The input schema lists typed arguments, requires those without defaults, forbids extras."""
    schema = word_count.input_schema()
    assert "title" not in schema
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["text"]
    assert schema["properties"]["text"]["type"] == "string"
    assert schema["properties"]["min_length"]["type"] == "integer"
    assert schema["properties"]["min_length"]["default"] == 0


def test_tool_name_can_be_overridden_and_defaults_apply() -> None:
    """`name=` renames the tool; without a tier it is destructive, without a timeout the default."""

    @tool(name="echo_text")
    def echo(text: str) -> str:
        """Echo the text."""
        return text

    assert echo.name == "echo_text"
    assert echo.tier is Tier.DESTRUCTIVE
    assert echo.timeout_s == DEFAULT_TIMEOUT_S


def test_async_tool_is_recognised() -> None:
    """A coroutine function becomes an async tool."""
    assert explode_async.is_async


def test_tool_without_docstring_is_refused() -> None:
    """A tool needs a docstring, because its first paragraph is what the model reads."""
    with pytest.raises(ToolDefinitionError, match=r"'no_docstring' has no docstring"):
        tool(tier="read")(no_docstring)


def test_tool_with_unannotated_parameter_is_refused() -> None:
    """Every parameter needs a type annotation, and the error names the parameter."""
    with pytest.raises(ToolDefinitionError, match=r"parameter 'text' needs a type annotation"):
        tool(tier="read")(unannotated)


def test_tool_with_var_args_is_refused() -> None:
    """`*args` and `**kwargs` have no JSON schema, so they are refused."""
    with pytest.raises(ToolDefinitionError, match=r"\*args/\*\*kwargs are not allowed"):
        tool(tier="read")(many)


@pytest.mark.parametrize("timeout_s", [0.0, -1.0])
def test_tool_with_non_positive_timeout_is_refused(timeout_s: float) -> None:
    """A timeout must be positive."""
    with pytest.raises(ToolDefinitionError, match="timeout_s must be positive"):
        tool(tier="read", timeout_s=timeout_s)(plain_function)


def test_tool_with_unknown_tier_is_refused_as_definition_error() -> None:
    """An unknown tier name is a declaration error, reported as `ToolDefinitionError`."""
    with pytest.raises(ToolDefinitionError):
        tool(tier="omnipotent")(plain_function)


def test_context_parameter_is_not_part_of_the_schema() -> None:
    """A `ToolContext` parameter is filled by the runtime and hidden from the model's schema."""
    schema = whoami.input_schema()
    assert whoami.context_param == "context"
    assert set(schema["properties"]) == {"label"}
    assert schema["required"] == ["label"]


def test_as_tool_keeps_a_declared_tool_unchanged() -> None:
    """`as_tool` returns an `@tool` as is."""
    assert as_tool(word_count, "tests:word_count") is word_count


def test_as_tool_makes_an_undecorated_function_destructive() -> None:
    """A plain function imported as a tool gets the most guarded tier and the default timeout."""
    made = as_tool(plain_function, "tests:plain_function")
    assert made.name == "plain_function"
    assert made.description == "Echo the text back."
    assert made.tier is Tier.DESTRUCTIVE
    assert made.timeout_s == DEFAULT_TIMEOUT_S


def test_as_tool_refuses_something_that_is_not_callable() -> None:
    """A non-callable object is refused, and the error names where it came from."""
    with pytest.raises(ToolDefinitionError, match=r"pkg\.mod:CONSTANT is not a function"):
        as_tool(42, "pkg.mod:CONSTANT")


@pytest.mark.parametrize(
    "obj",
    [functools.partial(plain_function, "fixed"), dict],
    ids=["partial-without-name", "builtin-class"],
)
def test_as_tool_refuses_odd_callables_as_definition_error(obj: Any) -> None:
    """A callable that cannot be described as a tool is refused with `ToolDefinitionError`."""
    with pytest.raises(ToolDefinitionError):
        as_tool(obj, "pkg.mod:odd")


# --- Toolbox ----------------------------------------------------------------------------------


@pytest.fixture
def toolbox() -> Toolbox:
    """A toolbox with the module's test tools that may use every tier."""
    return Toolbox(
        [word_count, add, whoami, explode, explode_async, refuse, summarize, opaque],
        ALL_TIERS,
    )


def test_toolbox_refuses_two_tools_with_one_name() -> None:
    """Two tools with the same name are a configuration error."""
    with pytest.raises(ToolDefinitionError, match="two tools are named 'add'"):
        Toolbox([add, add], ALL_TIERS)


def test_toolbox_specs_are_sorted_by_name(toolbox: Toolbox) -> None:
    """The model sees the tools in a stable, sorted order."""
    names = [item.name for item in toolbox.specs()]
    assert names == sorted(names)


async def test_successful_call_returns_ok_with_json_data(
    toolbox: Toolbox, tool_context: ToolContext
) -> None:
    """A successful call returns `ok` and data already converted to plain JSON values."""
    result = await toolbox.call("summarize", {"text": "one two three"}, tool_context)
    assert result.ok
    assert result.error is None
    assert result.data == {
        "summary": {"words": 3, "where": "notes/a.md"},
        "pair": [1, 2],
        "tags": ["x"],
    }
    json.dumps(result.data)


async def test_call_passes_validated_arguments_and_context(
    toolbox: Toolbox, tool_context: ToolContext
) -> None:
    """Arguments arrive validated, defaults filled in, and the context reaches its parameter."""
    counted = await toolbox.call("word_count", {"text": "a bb ccc"}, tool_context)
    filtered = await toolbox.call("word_count", {"text": "a bb ccc", "min_length": 2}, tool_context)
    me = await toolbox.call("whoami", {"label": "x"}, tool_context)
    assert (counted.data, filtered.data) == (3, 2)
    assert me.data == {"label": "x", "run_id": "run1", "key": "run1:2:call_1"}


async def test_unknown_tool_suggests_the_existing_tools(
    toolbox: Toolbox, tool_context: ToolContext
) -> None:
    """Calling a tool that does not exist returns `unknown_tool` with every tool name suggested."""
    result = await toolbox.call("word_cuont", {"text": "a"}, tool_context)
    assert not result.ok
    assert result.error is not None
    assert result.error.kind is ToolErrorKind.UNKNOWN_TOOL
    assert "'word_cuont'" in result.error.message
    for name in toolbox.tools:
        assert name in result.error.suggestion


async def test_unknown_tool_in_an_empty_toolbox_says_there_are_none(
    tool_context: ToolContext,
) -> None:
    """With no tools at all, the suggestion says so instead of listing nothing."""
    result = await Toolbox([], ALL_TIERS).call("anything", {}, tool_context)
    assert result.error is not None
    assert result.error.kind is ToolErrorKind.UNKNOWN_TOOL
    assert "(no tools)" in result.error.suggestion


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        ({"a": "one", "b": 2}, "'add': a:"),
        ({"a": [1], "b": 2}, "'add': a:"),
        ({"a": 1}, "'add': b:"),
        ({"a": 1, "b": 2, "c": 3}, "'add': c:"),
        ([1, 2], "not list"),
        ("a=1, b=2", "not str"),
        (None, "not NoneType"),
    ],
    ids=["wrong-type", "wrong-container", "missing", "extra", "list", "string", "null"],
)
async def test_malformed_arguments_are_invalid_arguments(
    toolbox: Toolbox, tool_context: ToolContext, args: Any, mentions: str
) -> None:
    """Wrong-typed, missing or extra arguments, or a non-object, are `invalid_arguments`."""
    result = await toolbox.call("add", args, tool_context)
    assert not result.ok
    assert result.error is not None
    assert result.error.kind is ToolErrorKind.INVALID_ARGUMENTS
    assert mentions in result.error.message
    assert result.error.suggestion


@pytest.mark.parametrize("name", ["explode", "explode_async"])
async def test_tool_that_raises_is_a_permanent_error_with_the_exception_text(
    toolbox: Toolbox, tool_context: ToolContext, name: str
) -> None:
    """An exception inside a tool, sync or async, becomes a `permanent` result and never escapes."""
    result = await toolbox.call(name, {"reason": "disk on fire"}, tool_context)
    assert not result.ok
    assert result.error is not None
    assert result.error.kind is ToolErrorKind.PERMANENT
    assert "disk on fire" in result.error.message
    assert name in result.error.message


async def test_tool_failure_keeps_its_kind_and_suggestion(
    toolbox: Toolbox, tool_context: ToolContext
) -> None:
    """A deliberate `ToolFailure` reaches the model with its own kind and suggestion."""
    result = await toolbox.call("refuse", {"reason": "busy"}, tool_context)
    assert result.error is not None
    assert result.error.kind is ToolErrorKind.TRANSIENT
    assert result.error.message == "busy"
    assert result.error.suggestion == "ask for something else"


async def test_non_json_return_value_is_a_permanent_error(
    toolbox: Toolbox, tool_context: ToolContext
) -> None:
    """A tool that returns a value without a JSON form yields a `permanent` result."""
    result = await toolbox.call("opaque", {}, tool_context)
    assert result.error is not None
    assert result.error.kind is ToolErrorKind.PERMANENT
    assert "not JSON" in result.error.message


async def test_sync_tool_past_its_timeout_is_a_timeout(tool_context: ToolContext) -> None:
    """A blocking sync tool that outlives its timeout returns `timeout` without waiting for it."""
    release = threading.Event()

    @tool(tier="read", timeout_s=0.05)
    def stuck() -> str:
        """Block until released."""
        release.wait(timeout=10)
        return "late"

    try:
        result = await Toolbox([stuck], ALL_TIERS).call("stuck", {}, tool_context)
        assert not release.is_set()
    finally:
        release.set()
    assert result.error is not None
    assert result.error.kind is ToolErrorKind.TIMEOUT
    assert "0.05s" in result.error.message


async def test_stuck_sync_tools_are_bounded_and_new_sync_calls_refused_at_once(
    tool_context: ToolContext,
) -> None:
    """Stuck sync-tool threads are counted; at the bound new sync calls get `transient` at once."""
    release = threading.Event()
    started: list[int] = []

    @tool(tier="read", timeout_s=0.05)
    def stuck(n: int) -> str:
        """Block until released."""
        started.append(n)
        release.wait(timeout=30)
        return f"late {n}"

    box = Toolbox([stuck], ALL_TIERS, max_abandoned_threads=2)
    try:
        for n in (1, 2):
            timed_out = await box.call("stuck", {"n": n}, tool_context)
            assert timed_out.error is not None
            assert timed_out.error.kind is ToolErrorKind.TIMEOUT
        assert box.abandoned_threads == 2

        refused = await box.call("stuck", {"n": 3}, tool_context)
        assert refused.error is not None
        assert refused.error.kind is ToolErrorKind.TRANSIENT
        assert refused.error.message.startswith("too many tool threads are stuck (2 of at most 2")
        assert refused.error.suggestion
        assert started == [1, 2]  # refused without taking a thread
    finally:
        release.set()

    for _ in range(500):  # the threads return once released: at most 5 s
        if box.abandoned_threads == 0:
            break
        await asyncio.sleep(0.01)
    assert box.abandoned_threads == 0
    answered = await box.call("stuck", {"n": 4}, tool_context)
    assert answered.data == "late 4"


async def test_async_tools_are_not_refused_when_sync_threads_are_stuck(
    tool_context: ToolContext,
) -> None:
    """The stuck-thread bound only refuses sync tools: an async tool needs no thread."""
    release = threading.Event()

    @tool(tier="read", timeout_s=0.05)
    def stuck() -> str:
        """Block until released."""
        release.wait(timeout=30)
        return "late"

    @tool(tier="read", timeout_s=5.0)
    async def quick() -> str:
        """Answer at once."""
        return "quick"

    box = Toolbox([stuck, quick], ALL_TIERS, max_abandoned_threads=1)
    try:
        await box.call("stuck", {}, tool_context)
        assert box.abandoned_threads == 1
        assert (await box.call("quick", {}, tool_context)).data == "quick"
    finally:
        release.set()


async def test_async_tool_past_its_timeout_is_a_timeout(tool_context: ToolContext) -> None:
    """An async tool that never finishes is cancelled at its timeout and returns `timeout`."""
    cancelled = asyncio.Event()

    @tool(tier="read", timeout_s=0.05)
    async def hang() -> str:
        """Wait forever."""
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return "never"

    result = await Toolbox([hang], ALL_TIERS).call("hang", {}, tool_context)
    assert result.error is not None
    assert result.error.kind is ToolErrorKind.TIMEOUT
    assert cancelled.is_set()


async def test_caller_timeout_shortens_the_tool_timeout(tool_context: ToolContext) -> None:
    """The run's remaining time caps a tool's own, longer timeout."""

    @tool(tier="read", timeout_s=30.0)
    async def hang() -> str:
        """Wait forever."""
        await asyncio.Event().wait()
        return "never"

    result = await Toolbox([hang], ALL_TIERS).call("hang", {}, tool_context, timeout_s=0.05)
    assert result.error is not None
    assert result.error.kind is ToolErrorKind.TIMEOUT
    assert "0.05s" in result.error.message


async def test_tool_of_a_tier_the_role_may_not_use_is_denied(tool_context: ToolContext) -> None:
    """A tool whose tier is not allowed is `denied` and its code never runs."""
    calls: list[str] = []

    @tool(tier="destructive")
    def wipe(target: str) -> str:
        """Delete everything at the target."""
        calls.append(target)
        return "wiped"

    box = Toolbox([wipe, add], [Tier.READ, Tier.WRITE_SAFE])
    result = await box.call("wipe", {"target": "/"}, tool_context)
    assert result.error is not None
    assert result.error.kind is ToolErrorKind.DENIED
    assert "'destructive'" in result.error.message
    assert calls == []
    assert (await box.call("add", {"a": 1, "b": 2}, tool_context)).data == 3


# --- load_tool --------------------------------------------------------------------------------


def test_load_tool_imports_a_declared_tool() -> None:
    """`package.module:function` imports the tool with its declared tier."""
    loaded = load_tool("hivebus.agent.tools.workspace:read_file")
    assert loaded.name == "read_file"
    assert loaded.tier is Tier.READ


def test_toolbox_from_refs_loads_every_reference() -> None:
    """`Toolbox.from_refs` loads each reference into one toolbox."""
    box = Toolbox.from_refs(
        ["hivebus.agent.tools.workspace:read_file", "hivebus.agent.tools.workspace:list_files"],
        [Tier.READ],
    )
    assert sorted(box.tools) == ["list_files", "read_file"]


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("hivebus.agent.tools.workspace", "must look like 'package.module:function'"),
        (":read_file", "must look like 'package.module:function'"),
        ("hivebus.agent.tools.workspace:", "must look like 'package.module:function'"),
        ("hivebus.no_such_module:tool", "cannot import tool module 'hivebus.no_such_module'"),
        (
            "hivebus.agent.tools.workspace:no_such",
            "module 'hivebus.agent.tools.workspace' has no tool 'no_such'",
        ),
        ("hivebus.agent.tools.workspace:MAX_FILE_BYTES", "is not a function or a @tool"),
        ("json:dumps", "parameter 'obj' needs a type annotation"),
    ],
    ids=[
        "no-colon",
        "no-module",
        "no-name",
        "no-module-found",
        "no-attribute",
        "not-callable",
        "unannotated",
    ],
)
def test_load_tool_errors_name_the_reference_and_the_problem(ref: str, message: str) -> None:
    """A bad tool reference raises `ToolDefinitionError` whose message says what is wrong."""
    with pytest.raises(ToolDefinitionError) as caught:
        load_tool(ref)
    assert message in str(caught.value)
