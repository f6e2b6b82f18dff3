"""The bounded agent loop, run for real with a scripted model, a real toolbox and a fake clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from hivebus.agent.errors import ModelError
from hivebus.agent.loop import AgentLoop, RunContext, RunOutcome, new_run, parse_output
from hivebus.agent.modelcall import ModelCaller
from hivebus.agent.models.base import Model, ModelRequest, ModelResponse, ToolCall, TurnUsage
from hivebus.agent.models.scripted import ScriptedModel, parse_script
from hivebus.agent.tool import Tool, ToolContext, tool
from hivebus.agent.toolbox import Toolbox
from hivebus.agent.toolstep import ToolRunner
from hivebus.contracts import (
    DependencyOutput,
    Limits,
    StepRecorded,
    SubTaskAssigned,
    SubTaskStatus,
    Tier,
    ToolErrorKind,
)
from hivebus.core import Clock, Price, SystemClock
from hivebus.core.reliability import BreakerPolicy, BreakerRegistry, RetryPolicy

from .fakes import CollectingSink, FakeClock, FunctionModel

FREE = Price(input_per_mtok=0.0, output_per_mtok=0.0)
ROUTE = "scripted:test"
RUN_ID = "run1"
TITLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"title": {"type": "string"}},
    "required": ["title"],
    "additionalProperties": False,
}


@tool(tier="read", timeout_s=5.0)
def lookup(key: str) -> str:
    """Look up the value stored under a key."""
    return f"value-of-{key}"


@tool(tier="read", timeout_s=5.0)
def explode() -> str:
    """Fail every time."""
    raise RuntimeError("the disk is on fire")


@tool(tier="write_safe", timeout_s=5.0)
def remember(note: str, context: ToolContext) -> str:
    """Store a note once; answers with the idempotency key it was given."""
    return f"{note}@{context.idempotency_key}"


class BrokenSink:
    """A sink whose bus is down: every publish fails."""

    def __init__(self) -> None:
        """Count the attempts."""
        self.attempts = 0

    async def publish(self, message: BaseModel) -> None:
        """Fail to publish the message."""
        self.attempts += 1
        raise ConnectionError(f"bus down, {type(message).__name__} lost")


def scripted(data: list[Any]) -> ScriptedModel:
    """A scripted model from in-memory turns."""
    return ScriptedModel(ROUTE, parse_script(data, "test"))


def recording(data: list[Any]) -> FunctionModel:
    """A scripted model that also records the requests it answered."""
    inner = scripted(data)
    return FunctionModel(inner.complete, route=inner.route)


def assignment(
    limits: Limits | None = None,
    output_schema: dict[str, Any] | None = None,
    **extra: Any,
) -> SubTaskAssigned:
    """A sub-task assignment for the `writer` role."""
    return SubTaskAssigned(
        task_id="task-1",
        subtask_id="sub-1",
        role="writer",
        goal="Write a short note.",
        prompt="Write the note about a.",
        limits=limits or Limits(),
        output_schema=output_schema,
        **extra,
    )


@dataclass
class Finished:
    """What a run returned and the step events it reported."""

    outcome: RunOutcome
    steps: list[StepRecorded]

    @property
    def reason(self) -> str:
        """The outcome's reason."""
        return self.outcome.reason


def assert_well_formed(finished: Finished) -> None:
    """One terminal outcome; step events numbered 1..N agree with the run's usage."""
    outcome, steps = finished.outcome, finished.steps
    assert outcome.status in {
        SubTaskStatus.COMPLETED,
        SubTaskStatus.FAILED,
        SubTaskStatus.BUDGET_EXCEEDED,
        SubTaskStatus.LOOP_DETECTED,
    }
    assert [e.step for e in steps] == list(range(1, len(steps) + 1))
    assert outcome.usage.steps == len(steps)
    assert outcome.usage.tool_calls == sum(1 for e in steps if e.step_kind == "tool")
    assert outcome.usage.input_tokens == sum(e.usage.input_tokens for e in steps)
    assert outcome.usage.output_tokens == sum(e.usage.output_tokens for e in steps)
    assert {(e.task_id, e.subtask_id, e.attempt, e.run_id) for e in steps} <= {
        ("task-1", "sub-1", 1, RUN_ID)
    }


def make_context(
    model: Model,
    toolbox: Toolbox,
    workspace: Path,
    *,
    price: Price,
    clock: Clock,
    sink: CollectingSink | BrokenSink,
) -> RunContext:
    """A run context around one model, with no retries, fresh breakers and no task budget."""
    breakers = BreakerRegistry(BreakerPolicy(), clock)
    no_retry = RetryPolicy(attempts=1)
    return RunContext(
        system="You are a test agent.",
        caller=ModelCaller([model], breakers=breakers, retry=no_retry, price_for=lambda _: price),
        tools=ToolRunner(toolbox, breakers=breakers, retry=no_retry),
        workspace=workspace,
        clock=clock,
        events=sink,
    )


async def run_agent(
    model: Model,
    workspace: Path,
    *,
    limits: Limits | None = None,
    tools: Sequence[Tool] = (lookup, explode, remember),
    output_schema: dict[str, Any] | None = None,
    clock: Clock | None = None,
    price: Price = FREE,
    **extra: Any,
) -> Finished:
    """Run one sub-task through the real loop and check the run is well formed."""
    sink = CollectingSink()
    ctx = make_context(
        model,
        Toolbox(tools, [Tier.READ, Tier.WRITE_SAFE]),
        workspace,
        price=price,
        clock=clock or FakeClock(),
        sink=sink,
    )
    task = assignment(limits, output_schema, **extra)
    outcome = await AgentLoop(task, ctx, new_run(task, RUN_ID)).run()
    finished = Finished(outcome=outcome, steps=sink.events)
    assert_well_formed(finished)
    return finished


TOOL_LOOP = [{"tool": "lookup", "args": {"key": "a"}}, {"then": "repeat"}]
VARIED_LOOKUPS = [
    *({"tool": "lookup", "args": {"key": key}} for key in "abcdef"),
    {"text": "done"},
]
"""Different calls each turn: no loop, so only a limit can stop it early."""


# --- completing -------------------------------------------------------------------------------


async def test_final_answer_completes_with_output_and_usage(workspace: Path) -> None:
    """A final answer completes the run with its text, tokens, steps, tool calls and cost."""
    model = scripted(
        [
            {
                "tool": "lookup",
                "args": {"key": "a"},
                "usage": {"input_tokens": 100, "output_tokens": 20},
            },
            {"text": "a is value-of-a", "usage": {"input_tokens": 150, "output_tokens": 30}},
        ]
    )
    price = Price(input_per_mtok=3.0, output_per_mtok=15.0)
    run = await run_agent(model, workspace, price=price)

    assert run.outcome.status is SubTaskStatus.COMPLETED
    assert run.reason == "final answer given"
    assert run.outcome.output == "a is value-of-a"
    usage = run.outcome.usage
    assert (usage.input_tokens, usage.output_tokens) == (250, 50)
    assert (usage.steps, usage.tool_calls) == (3, 1)
    assert usage.cost_usd == pytest.approx((250 * 3.0 + 50 * 15.0) / 1_000_000)
    assert [(e.step_kind, e.name) for e in run.steps] == [
        ("model", ROUTE),
        ("tool", "lookup"),
        ("model", ROUTE),
    ]
    tool_step = run.steps[1]
    assert tool_step.input == {"key": "a"}
    assert tool_step.output == {"ok": True, "data": "value-of-a", "error": None}
    assert tool_step.error is None
    assert (tool_step.usage.steps, tool_step.usage.tool_calls) == (1, 1)
    assert (run.steps[0].usage.input_tokens, run.steps[0].usage.output_tokens) == (100, 20)


async def test_tools_get_an_idempotency_key_naming_run_step_and_call(workspace: Path) -> None:
    """A tool's context carries `run:step:call`, stable for one call of one run."""
    run = await run_agent(
        scripted([{"tool": "remember", "args": {"note": "n"}}, {"text": "done"}]), workspace
    )
    assert run.steps[1].output["data"] == f"n@{RUN_ID}:2:call_1"


async def test_first_turn_carries_prompt_goal_input_dependencies_and_schema(
    workspace: Path,
) -> None:
    """The model's first user turn holds the prompt, goal, input, dependency outputs and schema."""
    model = recording([{"text": '{"title": "t"}'}])
    await run_agent(
        model,
        workspace,
        output_schema=TITLE_SCHEMA,
        input={"topic": "bees"},
        dependencies=[DependencyOutput(subtask_id="research", output={"facts": ["buzz"]})],
    )
    request = model.requests[0]
    assert request.system == "You are a test agent."
    assert [t.name for t in request.tools] == ["explode", "lookup", "remember"]
    first = request.messages[0].text or ""
    for fragment in ("Write the note about a.", "Write a short note.", '"topic": "bees"'):
        assert fragment in first
    assert "'research'" in first
    assert '"buzz"' in first
    assert '"required": ["title"]' in first


# --- limits -----------------------------------------------------------------------------------


async def test_step_limit_stops_a_repeating_tool_loop(workspace: Path) -> None:
    """A tool loop that never answers ends `budget_exceeded` at `max_steps`, after N steps."""
    run = await run_agent(scripted(TOOL_LOOP), workspace, limits=Limits(max_steps=5))
    assert run.outcome.status is SubTaskStatus.BUDGET_EXCEEDED
    assert run.reason == "max_steps reached (5 of 5)"
    assert run.outcome.usage.steps == 5
    assert run.outcome.output is None


async def test_limit_keeps_the_last_text_as_partial_output(workspace: Path) -> None:
    """When a limit stops the run, the model's last text is kept as the partial output."""

    async def narrate(request: ModelRequest) -> ModelResponse:
        turn = sum(1 for m in request.messages if m.role == "assistant") + 1
        call = ToolCall(id=f"call_{turn}", name="lookup", args={"key": str(turn)})
        return ModelResponse(text=f"draft {turn}", tool_calls=[call])

    run = await run_agent(FunctionModel(narrate), workspace, limits=Limits(max_steps=5))
    assert run.outcome.status is SubTaskStatus.BUDGET_EXCEEDED
    assert run.reason.startswith("max_steps")
    assert run.outcome.output == "draft 3"


async def test_token_limit_from_scripted_usage(workspace: Path) -> None:
    """Scripted usage that reaches `max_tokens` ends the run `budget_exceeded` naming the limit."""
    model = scripted(
        [
            {
                "tool": "lookup",
                "args": {"key": "a"},
                "usage": {"input_tokens": 400, "output_tokens": 100},
            },
            {"then": "repeat"},
        ]
    )
    run = await run_agent(model, workspace, limits=Limits(max_tokens=1000))
    assert run.outcome.status is SubTaskStatus.BUDGET_EXCEEDED
    assert run.reason == "max_tokens reached (1000 of 1000)"
    assert run.outcome.usage.tokens == 1000


async def test_tool_call_limit(workspace: Path) -> None:
    """A run that spends its tool calls ends `budget_exceeded` naming `max_tool_calls`."""
    run = await run_agent(scripted(TOOL_LOOP), workspace, limits=Limits(max_tool_calls=2))
    assert run.outcome.status is SubTaskStatus.BUDGET_EXCEEDED
    assert run.reason == "max_tool_calls reached (2 of 2)"
    assert run.outcome.usage.tool_calls == 2


async def test_wall_clock_limit_from_time_spent_in_tools(workspace: Path) -> None:
    """Time passing inside tools (on the fake clock) ends the run at `max_wall_s`."""
    clock = FakeClock()

    @tool(tier="read", timeout_s=5.0)
    def wait_a_while(seconds: float) -> str:
        """Work for the given number of seconds."""
        clock.advance(seconds)
        return "done"

    model = scripted([{"tool": "wait_a_while", "args": {"seconds": 3}}, {"then": "repeat"}])
    run = await run_agent(
        model, workspace, tools=[wait_a_while], clock=clock, limits=Limits(max_wall_s=5.0)
    )
    assert run.outcome.status is SubTaskStatus.BUDGET_EXCEEDED
    assert run.reason == "max_wall_s reached (6 of 5)"
    assert run.outcome.usage.wall_s == 6.0
    assert run.outcome.usage.tool_calls == 2


async def test_hanging_model_is_stopped_by_the_wall_clock_limit(workspace: Path) -> None:
    """A model call that never returns is cancelled at `max_wall_s` and the run ends promptly."""
    cancelled = asyncio.Event()

    async def hang(request: ModelRequest) -> ModelResponse:
        del request
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return ModelResponse(text="never")

    started = time.monotonic()
    async with asyncio.timeout(5):
        run = await run_agent(
            FunctionModel(hang), workspace, clock=SystemClock(), limits=Limits(max_wall_s=0.2)
        )
    assert time.monotonic() - started < 1.0
    assert cancelled.is_set()
    assert run.outcome.status is SubTaskStatus.BUDGET_EXCEEDED
    assert run.reason.startswith("max_wall_s reached")
    [step] = run.steps
    assert step.step_kind == "model"
    assert step.error is not None
    assert "wall-clock" in step.error


# --- faults go back to the model --------------------------------------------------------------


async def test_tool_faults_go_back_to_the_model_and_the_run_completes(workspace: Path) -> None:
    """Unknown tools, malformed arguments and raising tools reach the model as results."""
    model = recording(
        [
            {"tool": "no_such_tool", "args": {}},
            {"tool": "lookup", "args": {"key": 5, "extra": 1}},
            {"tool": "lookup", "args": ["not", "an", "object"]},
            {"tool": "explode"},
            {"text": "recovered"},
        ]
    )
    run = await run_agent(model, workspace)
    assert run.outcome.status is SubTaskStatus.COMPLETED
    assert run.outcome.output == "recovered"
    assert run.outcome.usage.tool_calls == 4

    seen = []
    for request in model.requests[1:]:
        last = request.messages[-1]
        assert last.role == "tool"
        [outcome] = last.tool_results
        assert not outcome.result.ok
        assert outcome.result.error is not None
        assert outcome.result.error.suggestion
        seen.append(outcome.result.error.kind)
    assert seen == [
        ToolErrorKind.UNKNOWN_TOOL,
        ToolErrorKind.INVALID_ARGUMENTS,
        ToolErrorKind.INVALID_ARGUMENTS,
        ToolErrorKind.PERMANENT,
    ]
    tool_errors = [e.error for e in run.steps if e.step_kind == "tool"]
    assert all(tool_errors)
    assert "the disk is on fire" in (tool_errors[-1] or "")


# --- output schema ----------------------------------------------------------------------------


async def test_valid_json_answer_completes_with_parsed_output(workspace: Path) -> None:
    """An answer valid against the output schema completes with the parsed JSON as output."""
    run = await run_agent(
        scripted([{"text": '{"title": "Bees"}'}]), workspace, output_schema=TITLE_SCHEMA
    )
    assert run.outcome.status is SubTaskStatus.COMPLETED
    assert run.outcome.output == {"title": "Bees"}


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        ('Sure! {"title": "Bees"}', "the answer is not JSON"),
        ('{"title": 3}', "does not match the output schema"),
        ('{"title": "Bees", "extra": true}', "does not match the output schema"),
    ],
    ids=["not-json", "wrong-type", "extra-field"],
)
async def test_invalid_answer_fails_with_invalid_output(
    workspace: Path, answer: str, detail: str
) -> None:
    """An answer that keeps breaking the output schema fails `invalid_output` after corrections."""
    model = scripted([{"text": answer}, {"then": "repeat"}])
    run = await run_agent(model, workspace, output_schema=TITLE_SCHEMA)
    assert run.outcome.status is SubTaskStatus.FAILED
    assert run.reason.startswith("invalid_output")
    assert detail in run.reason
    assert run.reason.endswith("(after 2 corrections)")
    assert run.outcome.output == answer
    assert run.outcome.usage.steps == 3


def test_parse_output_without_schema_keeps_text() -> None:
    """Without a schema the output is the text as given, even if it looks like JSON."""
    assert parse_output('{"a": 1}', None) == ('{"a": 1}', None)


def test_parse_output_reports_an_invalid_schema() -> None:
    """A broken output schema is reported as such rather than blamed on the answer."""
    output, error = parse_output('{"a": 1}', {"type": "no-such-type"})
    assert output == '{"a": 1}'
    assert error is not None
    assert "output schema is invalid" in error


# --- model failures ---------------------------------------------------------------------------


async def test_model_error_fails_the_run_with_its_message(workspace: Path) -> None:
    """A `ModelError` from the only model fails the run naming chain and error, text kept."""

    async def flaky(request: ModelRequest) -> ModelResponse:
        if any(m.role == "assistant" for m in request.messages):
            raise ModelError("model endpoint answered 503: overloaded", retryable=True)
        call = ToolCall(id="call_1", name="lookup", args={"key": "a"})
        return ModelResponse(text="looking a up", tool_calls=[call])

    run = await run_agent(FunctionModel(flaky), workspace)
    expected = (
        "no model could answer (tried function:test): "
        "function:test failed: model endpoint answered 503: overloaded"
    )
    assert run.outcome.status is SubTaskStatus.FAILED
    assert run.reason == expected
    assert run.outcome.output == "looking a up"
    assert run.steps[-1].step_kind == "model"
    assert run.steps[-1].error == expected


async def test_exhausted_script_fails_the_run(workspace: Path) -> None:
    """A script that runs out of turns fails the run with the script's explanation."""
    run = await run_agent(scripted([{"tool": "lookup", "args": {"key": "a"}}]), workspace)
    assert run.outcome.status is SubTaskStatus.FAILED
    assert "asked the model a 2nd time; the script has 1 turn " in run.reason


async def test_unexpected_model_exception_still_ends_with_one_outcome(workspace: Path) -> None:
    """A model adapter raising an unexpected exception still ends the run `failed`, not raising."""

    async def broken(request: ModelRequest) -> ModelResponse:
        del request
        raise ValueError("Expecting value: line 1 column 1 (char 0)")

    run = await run_agent(FunctionModel(broken), workspace)
    assert run.outcome.status is SubTaskStatus.FAILED


async def test_a_failing_step_sink_does_not_kill_the_run(workspace: Path) -> None:
    """Step events that cannot be delivered are logged and the run still completes."""
    sink = BrokenSink()
    ctx = make_context(
        scripted([{"tool": "lookup", "args": {"key": "a"}}, {"text": "done"}]),
        Toolbox([lookup], [Tier.READ]),
        workspace,
        price=FREE,
        clock=FakeClock(),
        sink=sink,
    )
    task = assignment()
    outcome = await AgentLoop(task, ctx, new_run(task, RUN_ID)).run()
    assert outcome.status is SubTaskStatus.COMPLETED
    assert sink.attempts == 3


# --- every run --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "limits", "status"),
    [
        ([{"text": "hi"}], Limits(), SubTaskStatus.COMPLETED),
        (VARIED_LOOKUPS, Limits(max_steps=7), SubTaskStatus.BUDGET_EXCEEDED),
        (TOOL_LOOP, Limits(max_steps=7), SubTaskStatus.LOOP_DETECTED),
        (TOOL_LOOP, Limits(max_steps=1), SubTaskStatus.BUDGET_EXCEEDED),
        (TOOL_LOOP, Limits(max_tool_calls=0), SubTaskStatus.BUDGET_EXCEEDED),
        ([{"tool": "lookup", "args": {"key": "a"}}], Limits(), SubTaskStatus.FAILED),
    ],
    ids=["answer", "steps", "same-call", "one-step", "no-tool-calls", "exhausted"],
)
async def test_every_run_ends_with_one_outcome_and_numbered_steps(
    workspace: Path, script: list[Any], limits: Limits, status: SubTaskStatus
) -> None:
    """Every run returns exactly one terminal outcome, with step events numbered 1..N."""
    run = await run_agent(scripted(script), workspace, limits=limits)
    assert run.outcome.status is status
    assert [e.step for e in run.steps] == list(range(1, run.outcome.usage.steps + 1))
    assert run.steps[0].step_kind == "model"


async def test_usage_per_call_comes_from_the_model(workspace: Path) -> None:
    """The run's tokens are the sum of what the model reported per call."""
    model = scripted(
        [
            {
                "tool": "lookup",
                "args": {"key": "a"},
                "usage": {"input_tokens": 7, "output_tokens": 1},
            },
            {"text": "done", "usage": {"input_tokens": 11, "output_tokens": 2}},
        ]
    )
    run = await run_agent(model, workspace)
    model_usage = [
        TurnUsage(input_tokens=e.usage.input_tokens, output_tokens=e.usage.output_tokens)
        for e in run.steps
        if e.step_kind == "model"
    ]
    assert model_usage == [
        TurnUsage(input_tokens=7, output_tokens=1),
        TurnUsage(input_tokens=11, output_tokens=2),
    ]


async def test_steps_record_duration_tier_and_what_the_runtime_told_the_model(
    workspace: Path,
) -> None:
    """A step says how long it took, a tool step its tier, a model step the warnings it carried."""
    run = await run_agent(scripted(TOOL_LOOP), workspace, limits=Limits(max_steps=10))
    assert run.outcome.status is SubTaskStatus.LOOP_DETECTED
    assert all(e.duration_s is not None and e.duration_s >= 0 for e in run.steps)
    tools = [e for e in run.steps if e.step_kind == "tool"]
    assert {e.tier for e in tools} == {"read"}
    assert all(e.tier is None for e in run.steps if e.step_kind == "model")
    told = [n for e in run.steps if e.step_kind == "model" for n in e.notes]
    assert any(n.startswith("told the model:") and "twice in a row" in n for n in told), told
