"""The scripted model: a validated list of turns, replayed by position in the conversation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from hivebus.agent.errors import ModelError, ScriptError
from hivebus.agent.models.base import (
    Message,
    ModelRequest,
    ToolCall,
    ToolOutcome,
    TurnUsage,
)
from hivebus.agent.models.scripted import (
    CHARS_PER_TOKEN,
    ScriptedModel,
    load_script,
    parse_script,
)
from hivebus.contracts import ToolResult

ROUTE = "scripted:test.yaml"


def conversation(assistant_turns: int, *, system: str = "sys") -> ModelRequest:
    """A request whose conversation already holds `assistant_turns` assistant turns."""
    messages = [Message(role="user", text="do the thing")]
    for n in range(1, assistant_turns + 1):
        call = ToolCall(id=f"call_{n}", name="lookup", args={"key": n})
        messages.append(Message(role="assistant", tool_calls=[call]))
        outcome = ToolOutcome(call_id=call.id, name="lookup", result=ToolResult.success(n))
        messages.append(Message(role="tool", tool_results=[outcome]))
    return ModelRequest(system=system, messages=messages)


def model(data: list[Any]) -> ScriptedModel:
    """A scripted model built from in-memory script data."""
    return ScriptedModel(ROUTE, parse_script(data, "test.yaml"))


# --- parse_script -----------------------------------------------------------------------------


def test_parse_script_accepts_text_tool_usage_and_repeat() -> None:
    """Text turns, tool turns with args, scripted usage and a final `then: repeat` all parse."""
    script = parse_script(
        [
            {"text": "thinking done"},
            {
                "tool": "lookup",
                "args": {"key": "a"},
                "usage": {"input_tokens": 10, "output_tokens": 2},
            },
            {"then": "repeat"},
        ],
        "s.yaml",
    )
    assert script.repeat is not None
    assert len(script.turns) == 2
    first, second = script.turns
    assert (first.text, first.tool, first.usage) == ("thinking done", None, None)
    assert (second.tool, second.args) == ("lookup", {"key": "a"})
    assert second.usage == TurnUsage(input_tokens=10, output_tokens=2)


def test_parse_script_without_repeat_does_not_repeat() -> None:
    """A script without `then: repeat` keeps every entry as a turn and does not repeat."""
    script = parse_script([{"tool": "lookup"}, {"text": "done"}], "s.yaml")
    assert script.repeat is None
    assert [t.tool or t.text for t in script.turns] == ["lookup", "done"]
    assert script.turns[0].args == {}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([], "must be a non-empty YAML list"),
        (None, "must be a non-empty YAML list"),
        ({"text": "hi"}, "a mapping must be {cases: "),
        ("text: hi", "must be a non-empty YAML list"),
        ([{"then": "repeat"}], "`then: repeat` needs a turn before it"),
        (
            [{"text": "a", "tool": "lookup"}],
            "turn 1: entry: Value error, each turn needs exactly one",
        ),
        (
            [{"text": "a"}, {"args": {"k": 1}}],
            "turn 2: entry: Value error, each turn needs exactly one",
        ),
        ([{"text": "a"}, {"then": "repeat"}, {"text": "b"}], "turn 2:"),
        ([{"text": "a"}, {"then": "again"}], "turn 2:"),
        ([{"txt": "a"}], "turn 1:"),
        (["hello"], "turn 1:"),
        ([{"text": "a"}, {"tool": "x", "usage": {"input_tokens": -1}}], "turn 2:"),
    ],
    ids=[
        "empty",
        "null",
        "mapping",
        "string",
        "repeat-alone",
        "both-text-and-tool",
        "neither",
        "repeat-not-last",
        "unknown-then",
        "misspelt-key",
        "not-a-mapping",
        "negative-usage",
    ],
)
def test_parse_script_rejects_bad_scripts_naming_the_place(data: Any, expected: str) -> None:
    """An invalid script raises `ScriptError` naming the script and, per turn, the turn number."""
    with pytest.raises(ScriptError) as caught:
        parse_script(data, "bad.yaml")
    message = str(caught.value)
    assert "bad.yaml" in message
    assert expected in message
    assert not caught.value.retryable


def test_load_script_reads_yaml(tmp_path: Path) -> None:
    """A YAML file with `- then: repeat` loads into the same script as the data would."""
    path = tmp_path / "s.yaml"
    path.write_text(
        "- tool: lookup\n  args: {key: a}\n- text: done\n- then: repeat\n", encoding="utf-8"
    )
    script = load_script(path)
    assert script.repeat is not None
    assert [t.tool or t.text for t in script.turns] == ["lookup", "done"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "cannot read script"), ("- text: [unclosed\n", "is not valid YAML")],
    ids=["missing", "bad-yaml"],
)
def test_load_script_reports_unreadable_files(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    """A missing or unparsable file is a `ScriptError` naming the file."""
    path = tmp_path / "s.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ScriptError, match=expected) as caught:
        load_script(path)
    assert str(path) in str(caught.value)


# --- ScriptedModel ----------------------------------------------------------------------------


async def test_scripted_model_plays_the_turn_after_the_assistant_turns_so_far() -> None:
    """The turn played is chosen by how many assistant turns the conversation already has."""
    scripted = model(
        [
            {"tool": "lookup", "args": {"key": "a"}},
            {"tool": "lookup", "args": {"key": "b"}},
            {"text": "done"},
        ]
    )
    first = await scripted.complete(conversation(0))
    second = await scripted.complete(conversation(1))
    third = await scripted.complete(conversation(2))
    assert first.tool_calls == [ToolCall(id="call_1", name="lookup", args={"key": "a"})]
    assert first.text is None
    assert second.tool_calls == [ToolCall(id="call_2", name="lookup", args={"key": "b"})]
    assert third.text == "done"
    assert third.tool_calls == []


async def test_scripted_model_replays_the_same_turn_for_the_same_conversation() -> None:
    """Asking twice at one position gives the same turn, so a resumed run continues in place."""
    scripted = model([{"tool": "lookup"}, {"text": "done"}])
    assert (await scripted.complete(conversation(1))).text == "done"
    assert (await scripted.complete(conversation(1))).text == "done"
    assert (await scripted.complete(conversation(0))).tool_calls[0].name == "lookup"


async def test_exhausted_script_raises_script_error() -> None:
    """Asking for a turn past the end of a script without repeat raises `ScriptError`."""
    scripted = model([{"tool": "lookup"}, {"text": "done"}])
    with pytest.raises(ScriptError) as caught:
        await scripted.complete(conversation(2))
    assert isinstance(caught.value, ModelError)
    assert not caught.value.retryable
    message = str(caught.value)
    assert ROUTE in message
    assert "the run asked the model a 3rd time; the script has 2 turns" in message
    assert "then: repeat" in message


async def test_repeat_plays_the_last_turn_forever() -> None:
    """With `then: repeat`, every turn past the end is the last scripted turn."""
    scripted = model(
        [{"text": "once"}, {"tool": "lookup", "args": {"key": "x"}}, {"then": "repeat"}]
    )
    assert (await scripted.complete(conversation(0))).text == "once"
    for turns in (1, 2, 5, 40):
        response = await scripted.complete(conversation(turns))
        assert [(c.name, c.args) for c in response.tool_calls] == [("lookup", {"key": "x"})]


async def test_scripted_usage_is_reported_as_written() -> None:
    """A turn's scripted usage is reported instead of the estimate."""
    scripted = model([{"text": "done", "usage": {"input_tokens": 1234, "output_tokens": 56}}])
    response = await scripted.complete(conversation(0))
    assert response.usage == TurnUsage(input_tokens=1234, output_tokens=56)


async def test_default_usage_estimate_is_deterministic() -> None:
    """Without scripted usage, tokens are characters / 4 + 1, the same on every call."""
    scripted = model([{"text": "hello world!"}])
    request = ModelRequest(system="abcd", messages=[Message(role="user", text="12345678")])
    first = await scripted.complete(request)
    second = await scripted.complete(request.model_copy(deep=True))
    assert first.usage == second.usage
    assert first.usage == TurnUsage(
        input_tokens=(4 + 8) // CHARS_PER_TOKEN + 1,
        output_tokens=len("hello world!") // CHARS_PER_TOKEN + 1,
    )


async def test_default_usage_estimate_grows_with_the_conversation() -> None:
    """The input estimate counts tool calls and results, so a longer conversation costs more."""
    scripted = model([{"tool": "lookup"}, {"then": "repeat"}])
    short = await scripted.complete(conversation(1))
    long = await scripted.complete(conversation(3))
    assert long.usage.input_tokens > short.usage.input_tokens
    assert long.usage.output_tokens == short.usage.output_tokens


# --- errors and delays ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "message", "retryable"),
    [
        ("rate_limit", "429 rate limited", True),
        ("overloaded", "529 overloaded", True),
        ("server_error", "500 internal server error", True),
        ("timeout", "request timed out", True),
        ("connection", "connection refused", True),
        ("bad_request", "400 bad request", False),
    ],
)
async def test_an_error_entry_fails_one_call_then_the_next_turn_plays(
    kind: str, message: str, *, retryable: bool
) -> None:
    """An error entry fails one call with its status, retryability and retry-after, then answers."""
    scripted = model([{"error": kind, "retry_after_s": 3}, {"text": "done"}])
    with pytest.raises(ModelError) as caught:
        await scripted.complete(conversation(0))
    assert str(caught.value) == f"{ROUTE}: {message}"
    assert caught.value.retryable is retryable
    assert caught.value.retry_after_s == 3
    assert (await scripted.complete(conversation(0))).text == "done"


async def test_error_entries_fail_as_many_calls_at_their_position() -> None:
    """Errors before a turn fail that many calls there; `usage_bound` consumes none of them."""
    scripted = model(
        [
            {"tool": "lookup"},
            {"error": "overloaded"},
            {"error": "timeout"},
            {"text": "done", "usage": {"input_tokens": 5, "output_tokens": 1}},
        ]
    )
    assert (await scripted.complete(conversation(0))).tool_calls
    assert scripted.usage_bound(conversation(1)) == TurnUsage()
    failures = []
    for _ in range(2):
        with pytest.raises(ModelError) as caught:
            await scripted.complete(conversation(1))
        failures.append(str(caught.value))
    assert failures == [f"{ROUTE}: 529 overloaded", f"{ROUTE}: request timed out"]
    assert scripted.usage_bound(conversation(1)) == TurnUsage(input_tokens=5, output_tokens=1)
    assert (await scripted.complete(conversation(1))).text == "done"


async def test_a_delayed_turn_answers_only_after_its_delay() -> None:
    """A turn with `delay_s` is still pending when other tasks run, and answers after the delay."""
    scripted = model([{"text": "late", "delay_s": 0.05}])
    started = asyncio.get_running_loop().time()
    pending = asyncio.create_task(scripted.complete(conversation(0)))
    await asyncio.sleep(0)
    assert not pending.done()
    response = await asyncio.wait_for(pending, timeout=5)
    assert response.text == "late"
    assert asyncio.get_running_loop().time() - started >= 0.05


def test_a_turn_may_make_several_tool_calls_with_distinct_ids() -> None:
    """`calls` answers with every call at once, ids `call_<turn>_<n>`; mixing kinds is refused."""
    scripted = model(
        [{"calls": [{"tool": "a", "args": {"x": 1}}, {"tool": "b"}]}, {"text": "done"}]
    )
    response = asyncio.run(scripted.complete(conversation(0)))
    assert [(c.id, c.name, c.args) for c in response.tool_calls] == [
        ("call_1_1", "a", {"x": 1}),
        ("call_1_2", "b", {}),
    ]
    with pytest.raises(ScriptError, match="exactly one of"):
        parse_script([{"calls": [{"tool": "a"}], "text": "and an answer"}], "s.yaml")


def _asked(prompt: str) -> ModelRequest:
    return ModelRequest(system="sys", messages=[Message(role="user", text=prompt)])


async def test_cases_choose_the_turns_by_the_first_prompt() -> None:
    """A correction's prompt plays its own case; a first request plays the catch-all."""
    script = parse_script(
        {
            "cases": [
                {"when": "was not a valid plan", "turns": [{"text": "fixed"}]},
                {"turns": [{"text": "first try"}]},
            ]
        },
        "cases.yaml",
    )
    model = ScriptedModel(ROUTE, script)
    assert (await model.complete(_asked("plan it"))).text == "first try"
    assert (await model.complete(_asked("plan it; it was not a valid plan"))).text == "fixed"


async def test_no_matching_case_is_a_clear_error() -> None:
    """A prompt no case matches names the cases it looked for."""
    script = parse_script({"cases": [{"when": "only this", "turns": [{"text": "x"}]}]}, "c.yaml")
    with pytest.raises(ScriptError, match="no case matches the run's first prompt"):
        await ScriptedModel(ROUTE, script).complete(_asked("something else"))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"turns": []}, "a mapping must be"),
        ({"cases": [{"text": "x"}]}, "case 1: needs `turns`"),
        ({"cases": [{"when": "", "turns": [{"text": "x"}]}]}, "`when` must be a non-empty text"),
        ({"cases": [{"turns": [{"nope": 1}]}]}, "case 1, turn 1"),
    ],
)
def test_bad_cases_are_rejected_naming_the_place(data: Any, expected: str) -> None:
    """A malformed case says which one is wrong, and how."""
    with pytest.raises(ScriptError, match=expected):
        parse_script(data, "c.yaml")


async def test_after_guard_plays_the_turn_where_it_was_recorded() -> None:
    """A turn with `after` plays when the conversation ends as it says."""
    scripted = model([{"tool": "lookup", "after": "user"}, {"text": "done", "after": ["lookup"]}])
    assert (await scripted.complete(conversation(0))).tool_calls[0].name == "lookup"
    assert (await scripted.complete(conversation(1))).text == "done"


async def test_after_guard_names_where_the_run_went_instead() -> None:
    """A turn recorded after other tool results fails with what was recorded and what came."""
    scripted = model([{"tool": "lookup"}, {"text": "done", "after": ["kb_write"]}])
    with pytest.raises(ScriptError) as caught:
        await scripted.complete(conversation(1))
    assert "turn 2 was recorded after the results of kb_write" in str(caught.value)
    assert "this run asks it after the results of lookup" in str(caught.value)


def test_error_entry_with_after_is_refused() -> None:
    """`after` belongs on the answer, not on an error before it."""
    with pytest.raises(ScriptError, match="cannot carry `after`"):
        parse_script([{"error": "rate_limit", "after": "user"}, {"text": "x"}], "t.yaml")
