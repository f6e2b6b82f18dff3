"""Every failure mode of a run, through the real loop, model caller, tool runner and toolbox.

Time is a fake clock that retries and breakers move by sleeping on it, so nothing here waits
for real except the wall-clock test and the tool timeouts (each well under a second).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs

from hivebus.agent.breakers import BreakerEvents, serving
from hivebus.agent.errors import ModelError, ToolFailure
from hivebus.agent.loop import AgentLoop, RunContext, RunOutcome, new_run
from hivebus.agent.modelcall import BudgetGate, BudgetRefusedError, ModelCaller, ModelStep
from hivebus.agent.models.base import (
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    ToolCall,
    ToolOutcome,
    TurnUsage,
)
from hivebus.agent.models.scripted import ScriptedModel, parse_script
from hivebus.agent.tool import Tool, ToolContext, tool
from hivebus.agent.toolbox import Toolbox
from hivebus.agent.toolstep import ToolRunner
from hivebus.agent.validators import OutputValidator
from hivebus.agent.validators.contacts import PLACEHOLDER as REMOVED
from hivebus.agent.validators.contacts import contact_details
from hivebus.agent.validators.secrets import PLACEHOLDER as REDACTED
from hivebus.contracts import (
    BreakerChanged,
    BudgetWarning,
    Limits,
    RetryRecord,
    StepRecorded,
    SubTaskAssigned,
    SubTaskStatus,
    TaskBudget,
    Tier,
    ToolErrorKind,
    ToolResult,
)
from hivebus.core import Clock, EventSink, Price, SystemClock
from hivebus.core.budget import BudgetLedger, MemoryLedgerStore
from hivebus.core.reliability import BreakerPolicy, BreakerRegistry, BreakerState, RetryPolicy

from .fakes import CollectingSink, FakeClock, FakeSleep, FunctionModel, assistant_turns

PRIMARY = "scripted:primary"
FALLBACK = "scripted:fallback"
FREE = Price(input_per_mtok=0.0, output_per_mtok=0.0)
NO_RETRY = RetryPolicy(attempts=1)
RETRY = RetryPolicy(attempts=3, initial_s=0.5, max_s=8.0, jitter_s=0.0)
WRAP_UP = "[hivebus] You have used 80%"
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


# --- the rig ----------------------------------------------------------------------------------


def scripted(turns: list[Any], route: str = PRIMARY) -> FunctionModel:
    """A scripted model that also keeps every request it was sent (one per call)."""
    inner = ScriptedModel(route, parse_script(turns, route))
    return FunctionModel(inner.complete, route=route)


def lookups(*keys: str, then: str = "done") -> list[dict[str, Any]]:
    """A script calling `lookup` once per key (never twice alike), then answering `then`."""
    return [*({"tool": "lookup", "args": {"key": key}} for key in keys), {"text": then}]


def narrating(final: str = "final answer") -> FunctionModel:
    """A model saying "draft N" and looking up key N each turn; without tools it says `final`."""

    async def respond(request: ModelRequest) -> ModelResponse:
        if not request.tools:
            return ModelResponse(text=final)
        turn = assistant_turns(request) + 1
        call = ToolCall(id=f"call_{turn}", name="lookup", args={"key": str(turn)})
        return ModelResponse(text=f"draft {turn}", tool_calls=[call])

    return FunctionModel(respond, route="function:narrator")


def assignment(limits: Limits, output_schema: dict[str, Any] | None) -> SubTaskAssigned:
    """A sub-task for the `writer` role with these limits."""
    return SubTaskAssigned(
        task_id="task-1",
        subtask_id="sub-1",
        role="writer",
        goal="Answer the question.",
        prompt="Find the answer.",
        limits=limits,
        output_schema=output_schema,
    )


@dataclass
class Run:
    """What one run returned, the events it reported, and the fakes it ran on."""

    outcome: RunOutcome
    sink: CollectingSink
    sleep: FakeSleep | None
    breakers: BreakerRegistry

    @property
    def steps(self) -> list[StepRecorded]:
        """Every step event, in order."""
        return self.sink.events

    def of_kind(self, kind: str) -> list[StepRecorded]:
        """The step events of one kind (`model` or `tool`)."""
        return [step for step in self.steps if step.step_kind == kind]

    def breaker_changes(self) -> list[tuple[str, str, str]]:
        """(breaker, old, new) of every BreakerChanged event."""
        return [
            (event.breaker, event.old, event.new)
            for event in self.sink.side
            if isinstance(event, BreakerChanged)
        ]


@dataclass
class Rig:
    """How to build one run; every part has a default that leaves the feature out."""

    workspace: Path
    tools: Sequence[Tool] = (lookup,)
    tiers: Sequence[Tier] = (Tier.READ,)
    limits: Limits = field(default_factory=Limits)
    output_schema: dict[str, Any] | None = None
    retry: RetryPolicy = NO_RETRY
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    budget: BudgetGate | None = None
    validators: Sequence[OutputValidator] = ()
    output_retries: int = 2
    clock: Clock = field(default_factory=FakeClock)
    price: Price = field(default_factory=lambda: FREE)

    async def run(self, *models: Model) -> Run:
        """Run the sub-task with `models` as the fallback chain, primary first."""
        sleep = FakeSleep(self.clock) if isinstance(self.clock, FakeClock) else None
        sink = CollectingSink()
        breaker_events = BreakerEvents(sink)
        breakers = BreakerRegistry(self.breaker, self.clock, breaker_events.changed)
        ctx = RunContext(
            system="You are a test agent.",
            caller=ModelCaller(
                list(models),
                breakers=breakers,
                retry=self.retry,
                price_for=lambda _route: self.price,
                sleep=sleep or asyncio.sleep,
                budget=self.budget,
                events=sink,
            ),
            tools=ToolRunner(
                Toolbox(self.tools, self.tiers),
                breakers=breakers,
                retry=self.retry,
                sleep=sleep or asyncio.sleep,
            ),
            workspace=self.workspace,
            clock=self.clock,
            events=sink,
            validators=list(self.validators),
            output_retries=self.output_retries,
        )
        task = assignment(self.limits, self.output_schema)
        with serving(task.task_id, task.subtask_id):
            outcome = await AgentLoop(task, ctx, new_run(task, "run1")).run()
        await breaker_events.drain()
        assert [step.step for step in sink.events] == list(range(1, outcome.usage.steps + 1))
        return Run(outcome=outcome, sink=sink, sleep=sleep, breakers=breakers)


def tool_results(request: ModelRequest) -> list[ToolOutcome]:
    """The tool results a request hands back to the model (its last turn)."""
    last = request.messages[-1]
    assert last.role == "tool"
    return last.tool_results


def error_kinds(model: FunctionModel) -> list[ToolErrorKind | None]:
    """The error kind of every tool result the model was handed, in order (None: success)."""
    return [
        outcome.result.error.kind if outcome.result.error else None
        for request in model.requests
        for message in request.messages[-1:]
        for outcome in message.tool_results
    ]


def runtime_notes(message_list: list[Message], prefix: str = "[hivebus]") -> list[str]:
    """The runtime's own user turns in a conversation."""
    return [
        m.text for m in message_list if m.role == "user" and m.text and m.text.startswith(prefix)
    ]


@pytest.fixture
def rig(workspace: Path) -> Rig:
    """A rig with defaults: one read tool, default limits, no retries, a fake clock."""
    return Rig(workspace)


# --- tool failures go back to the model -------------------------------------------------------


async def test_malformed_tool_arguments_go_back_as_invalid_arguments(rig: Rig) -> None:
    """Arguments that break a tool's schema reach the model as `invalid_arguments`, tool unrun."""
    ran: list[str] = []

    @tool(tier="read", timeout_s=5.0)
    def record(key: str) -> str:
        """Record a key."""
        ran.append(key)
        return key

    rig.tools = [record]
    model = scripted([{"tool": "record", "args": {"key": 5, "extra": 1}}, {"text": "done"}])
    run = await rig.run(model)

    assert run.outcome.status is SubTaskStatus.COMPLETED
    assert run.outcome.output == "done"
    [outcome] = tool_results(model.requests[1])
    error = outcome.result.error
    assert error is not None
    assert error.kind is ToolErrorKind.INVALID_ARGUMENTS
    assert "key" in error.message
    assert "extra" in error.message
    assert error.suggestion
    assert ran == []


async def test_a_tool_that_always_times_out_is_switched_off_by_its_breaker(rig: Rig) -> None:
    """Timeouts return `timeout`; then the open breaker answers "switched off" without a call."""
    started: list[int] = []

    @tool(tier="read", timeout_s=0.01)
    async def hang(n: int) -> str:
        """Never answer."""
        started.append(n)
        await asyncio.Event().wait()
        return "never"

    rig.tools = [hang]
    rig.retry = RETRY
    rig.breaker = BreakerPolicy(failure_threshold=3, reset_after_s=60)
    model = scripted(
        [*({"tool": "hang", "args": {"n": n}} for n in (1, 2, 3, 4, 5)), {"text": "gave up"}]
    )
    run = await rig.run(model)

    assert run.outcome.status is SubTaskStatus.COMPLETED
    assert run.outcome.output == "gave up"
    assert started == [1, 2, 3]
    assert error_kinds(model) == [ToolErrorKind.TIMEOUT] * 3 + [ToolErrorKind.TRANSIENT] * 2
    switched_off = tool_results(model.requests[4])[0].result.error
    assert switched_off is not None
    assert "switched off" in switched_off.message
    assert switched_off.suggestion
    assert run.breaker_changes() == [("tool:hang", "closed", "open")]
    [opened] = run.sink.side
    assert isinstance(opened, BreakerChanged)
    assert (opened.task_id, opened.subtask_id) == ("task-1", "sub-1")
    assert all(step.notes == [] for step in run.of_kind("tool"))  # changes are events, not notes
    assert run.sleep is not None
    assert run.sleep.delays == []  # a timeout is the tool's answer, not a transient error


async def test_a_transient_tool_failure_is_retried_and_recorded(rig: Rig) -> None:
    """A tool failing transiently is retried with backoff; the retries are on its step event."""
    attempts: list[str] = []

    @tool(tier="read", timeout_s=5.0)
    def flaky(key: str) -> str:
        """Read a key from a flaky service."""
        attempts.append(key)
        if len(attempts) < 3:
            raise ToolFailure("503 from the service", "try again", ToolErrorKind.TRANSIENT)
        return f"value-of-{key}"

    rig.tools = [flaky]
    rig.retry = RETRY
    model = scripted([{"tool": "flaky", "args": {"key": "a"}}, {"text": "done"}])
    run = await rig.run(model)

    assert run.outcome.status is SubTaskStatus.COMPLETED
    assert attempts == ["a", "a", "a"]
    assert tool_results(model.requests[1])[0].result == ToolResult.success("value-of-a")
    [step] = run.of_kind("tool")
    assert [(r.target, r.attempt, r.error, r.delay_s) for r in step.retries] == [
        ("flaky", 1, "503 from the service", 0.5),
        ("flaky", 2, "503 from the service", 1.0),
    ]
    assert run.outcome.usage.retries == 2
    assert run.sleep is not None
    assert run.sleep.delays == [0.5, 1.0]
    assert run.breakers.get("tool:flaky").state is BreakerState.CLOSED


async def test_a_raising_tool_is_a_permanent_result_and_the_run_goes_on(rig: Rig) -> None:
    """A tool that raises gives the model a `permanent` result; its breaker does not count it."""

    @tool(tier="read", timeout_s=5.0)
    def explode(n: int) -> str:
        """Fail every time."""
        raise RuntimeError(f"the disk is on fire ({n})")

    rig.tools = [explode]
    rig.breaker = BreakerPolicy(failure_threshold=2)
    model = scripted(
        [*({"tool": "explode", "args": {"n": n}} for n in (1, 2, 3)), {"text": "recovered"}]
    )
    run = await rig.run(model)

    assert run.outcome.status is SubTaskStatus.COMPLETED
    assert run.outcome.output == "recovered"
    assert error_kinds(model) == [ToolErrorKind.PERMANENT] * 3
    assert "the disk is on fire (3)" in (run.of_kind("tool")[-1].error or "")
    assert run.breakers.get("tool:explode").state is BreakerState.CLOSED
    assert run.breaker_changes() == []


async def test_an_unknown_tool_is_named_back_to_the_model(rig: Rig) -> None:
    """A call to a tool the role does not have returns `unknown_tool` listing the real ones."""
    model = scripted([{"tool": "no_such_tool", "args": {}}, {"text": "done"}])
    run = await rig.run(model)

    assert run.outcome.status is SubTaskStatus.COMPLETED
    [outcome] = tool_results(model.requests[1])
    error = outcome.result.error
    assert error is not None
    assert error.kind is ToolErrorKind.UNKNOWN_TOOL
    assert "no_such_tool" in error.message
    assert "lookup" in error.suggestion


async def test_a_tool_above_the_role_tier_is_denied_and_never_runs(rig: Rig) -> None:
    """A tool whose tier the role may not use returns `denied` and its code never runs."""
    wiped: list[bool] = []

    @tool(tier="destructive", timeout_s=5.0)
    def wipe() -> str:
        """Delete everything."""
        wiped.append(True)
        return "gone"

    rig.tools = [lookup, wipe]
    model = scripted([{"tool": "wipe", "args": {}}, {"text": "this needs a person"}])
    run = await rig.run(model)

    assert run.outcome.status is SubTaskStatus.COMPLETED
    [outcome] = tool_results(model.requests[1])
    assert outcome.result.error is not None
    assert outcome.result.error.kind is ToolErrorKind.DENIED
    assert "destructive" in outcome.result.error.message
    assert wiped == []


# --- limits -----------------------------------------------------------------------------------


async def test_step_limit_ends_budget_exceeded_keeping_the_last_text(rig: Rig) -> None:
    """A run that never answers ends `budget_exceeded` at `max_steps`, its last text kept."""
    rig.limits = Limits(max_steps=5)
    run = await rig.run(narrating())

    assert run.outcome.status is SubTaskStatus.BUDGET_EXCEEDED
    assert run.outcome.limit == "max_steps"
    assert run.outcome.reason == "max_steps reached (5 of 5)"
    assert run.outcome.output == "draft 3"
    assert run.outcome.usage.steps == 5


async def test_token_limit_from_scripted_usage(rig: Rig) -> None:
    """Tokens reported by the model reaching `max_tokens` end the run naming that limit."""
    heavy = {"usage": {"input_tokens": 400, "output_tokens": 100}}
    rig.limits = Limits(max_tokens=1000)
    run = await rig.run(scripted([{**turn, **heavy} for turn in lookups("a", "b", "c")]))

    assert run.outcome.status is SubTaskStatus.BUDGET_EXCEEDED
    assert run.outcome.limit == "max_tokens"
    assert run.outcome.reason == "max_tokens reached (1000 of 1000)"
    assert run.outcome.usage.tokens == 1000
    assert run.outcome.usage.tool_calls == 1


async def test_wall_clock_limit_cuts_a_slow_model_call(rig: Rig) -> None:
    """A model turn slower than the time left is cut at `max_wall_s`; the run ends promptly."""
    rig.clock = SystemClock()
    rig.limits = Limits(max_wall_s=0.3)
    model = scripted([{"text": "late", "delay_s": 30}])

    started = time.monotonic()
    async with asyncio.timeout(5):
        run = await rig.run(model)

    assert time.monotonic() - started < 1.0
    assert run.outcome.status is SubTaskStatus.BUDGET_EXCEEDED
    assert run.outcome.limit == "max_wall_s"
    assert run.outcome.reason.startswith("max_wall_s reached")
    [step] = run.steps
    assert step.step_kind == "model"
    assert "wall-clock" in (step.error or "")


async def test_tool_call_limit_gets_one_last_turn_without_tools(rig: Rig) -> None:
    """Out of tool calls, the model gets one turn without tools; its text is the partial output."""
    rig.limits = Limits(max_tool_calls=2)
    model = narrating(final="what I found: value-of-1, value-of-2")
    run = await rig.run(model)

    assert run.outcome.status is SubTaskStatus.BUDGET_EXCEEDED
    assert run.outcome.limit == "max_tool_calls"
    assert run.outcome.output == "what I found: value-of-1, value-of-2"
    assert run.outcome.usage.tool_calls == 2
    assert all(request.tools for request in model.requests[:-1])
    last = model.requests[-1]
    assert last.tools == []
    note = last.messages[-1].text or ""
    assert note.startswith("[hivebus] max_tool_calls reached (2 of 2): no more tool calls")
    [not_run] = last.messages[-2].tool_results  # the call asked for when the limit was hit
    assert not_run.result.error is not None
    assert not_run.result.error.message == "not run: a limit was reached"


async def test_soft_limit_tells_the_model_to_wrap_up_once_per_limit(rig: Rig) -> None:
    """At 80% of a limit one "[hivebus]" wrap-up turn names it, once, right before the next call."""
    rig.limits = Limits(max_tool_calls=5, max_steps=12)
    model = narrating()
    run = await rig.run(model)

    assert run.outcome.status is SubTaskStatus.BUDGET_EXCEEDED
    wrap_ups = runtime_notes(model.requests[-1].messages, WRAP_UP)
    assert len(wrap_ups) == 2
    assert "max_tool_calls 4 of 5" in wrap_ups[0]
    assert "max_steps" not in wrap_ups[0]
    assert "max_steps 10 of 12" in wrap_ups[1]
    assert "max_tool_calls" not in wrap_ups[1]
    # each arrives as the last turn before the model call that follows the crossing
    assert model.requests[4].messages[-1].text == wrap_ups[0]
    assert model.requests[5].messages[-1].text == wrap_ups[1]
    assert runtime_notes(model.requests[3].messages, WRAP_UP) == []


async def test_the_same_call_is_warned_at_two_and_ends_loop_detected_at_three(rig: Rig) -> None:
    """A repeated call is warned at two and ends `loop_detected` at three, the third not run."""
    probed: list[str] = []

    @tool(tier="read", timeout_s=5.0)
    def probe(key: str) -> str:
        """Probe a key."""
        probed.append(key)
        return "same as before"

    rig.tools = [probe]
    model = scripted([{"tool": "probe", "args": {"key": "a"}}, {"then": "repeat"}])
    run = await rig.run(model)

    assert run.outcome.status is SubTaskStatus.LOOP_DETECTED
    assert run.outcome.reason == "probe called 3 times in a row with the same arguments"
    assert probed == ["a", "a"]
    assert len(run.of_kind("tool")) == 2
    assert runtime_notes(model.requests[1].messages) == []
    [warning] = runtime_notes(model.requests[2].messages)
    assert "twice in a row" in warning
    assert model.requests[2].messages[-1].text == warning


# --- model failures ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after_s", "max_s", "delay_s"),
    [(None, 8.0, 0.5), (2.0, 8.0, 2.0), (60.0, 5.0, 5.0)],
    ids=["backoff", "retry-after", "retry-after-capped"],
)
async def test_a_rate_limited_call_is_retried_and_recorded(
    rig: Rig, retry_after_s: float | None, max_s: float, delay_s: float
) -> None:
    """A 429 is retried after backoff or `retry_after_s` (up to `max_s`), recorded and counted."""
    rig.retry = RetryPolicy(attempts=3, initial_s=0.5, max_s=max_s, jitter_s=0.0)
    error: dict[str, Any] = {"error": "rate_limit"}
    if retry_after_s is not None:
        error["retry_after_s"] = retry_after_s
    run = await rig.run(scripted([error, {"text": "done"}]))

    assert run.outcome.status is SubTaskStatus.COMPLETED
    assert run.outcome.output == "done"
    assert run.sleep is not None
    assert run.sleep.delays == [delay_s]
    [step] = run.steps
    assert step.retries == [
        RetryRecord(
            target=PRIMARY, attempt=1, error=f"{PRIMARY}: 429 rate limited", delay_s=delay_s
        )
    ]
    assert step.usage.retries == 1
    assert run.outcome.usage.retries == 1
    assert run.outcome.usage.wall_s == delay_s
    assert run.breaker_changes() == []


async def test_a_bad_request_is_not_retried(rig: Rig) -> None:
    """A 400 fails at once: no retry, no sleep, no breaker count; the run fails naming it."""
    rig.retry = RETRY
    model = scripted([{"error": "bad_request"}, {"text": "never reached"}])
    run = await rig.run(model)

    assert run.outcome.status is SubTaskStatus.FAILED
    assert run.outcome.reason == (
        f"no model could answer (tried {PRIMARY}): {PRIMARY} failed: {PRIMARY}: 400 bad request"
    )
    assert len(model.requests) == 1
    assert run.sleep is not None
    assert run.sleep.delays == []
    assert run.steps[0].retries == []
    breaker = run.breakers.get(f"model:{PRIMARY}")
    assert (breaker.state, breaker.failures) == (BreakerState.CLOSED, 0)


async def test_a_failing_model_opens_its_breaker_and_the_fallback_answers(rig: Rig) -> None:
    """A failing primary opens its breaker (event sent), is skipped, and the fallback answers."""
    rig.retry = RetryPolicy(attempts=2, initial_s=0.5, max_s=8.0, jitter_s=0.0)
    rig.breaker = BreakerPolicy(failure_threshold=2, reset_after_s=30)
    primary = scripted([{"error": "server_error"}, {"then": "repeat"}])
    fallback = scripted(lookups("a", "b"), route=FALLBACK)
    run = await rig.run(primary, fallback)

    assert run.outcome.status is SubTaskStatus.COMPLETED
    assert run.outcome.output == "done"
    assert len(primary.requests) == 4  # two model steps, two attempts each, then skipped
    model_steps = run.of_kind("model")
    assert [step.name for step in model_steps] == [FALLBACK] * 3
    assert [record.target for record in model_steps[0].retries] == [PRIMARY]
    assert model_steps[1].notes == [f"{PRIMARY} failed: {PRIMARY}: 500 internal server error"]
    assert any(
        note.startswith(f"{PRIMARY}: circuit open") and note.endswith("skipped")
        for note in model_steps[2].notes
    )
    assert run.breaker_changes() == [(f"model:{PRIMARY}", "closed", "open")]
    [event] = run.sink.side
    assert isinstance(event, BreakerChanged)
    assert (event.task_id, event.subtask_id) == ("task-1", "sub-1")
    assert run.outcome.usage.retries == 2


async def test_an_open_model_breaker_lets_a_trial_through_after_its_pause(rig: Rig) -> None:
    """After `reset_after_s` the primary gets one trial, and its answer closes the breaker."""
    clock = FakeClock()

    @tool(tier="read", timeout_s=5.0)
    def pause(seconds: float) -> str:
        """Wait for the given number of seconds."""
        clock.advance(seconds)
        return "waited"

    rig.clock = clock
    rig.tools = [pause]
    rig.breaker = BreakerPolicy(failure_threshold=2, reset_after_s=30)
    primary = scripted(
        [
            {"error": "server_error"},
            {"text": "unused: the fallback answered"},
            {"error": "server_error"},
            {"text": "unused: the fallback answered"},
            {"text": "primary is back"},
        ]
    )
    fallback = scripted(
        [{"tool": "pause", "args": {"seconds": 1}}, {"tool": "pause", "args": {"seconds": 30}}],
        route=FALLBACK,
    )
    run = await rig.run(primary, fallback)

    assert run.outcome.status is SubTaskStatus.COMPLETED
    assert run.outcome.output == "primary is back"
    breaker = f"model:{PRIMARY}"
    assert run.breaker_changes() == [
        (breaker, "closed", "open"),
        (breaker, "open", "half_open"),
        (breaker, "half_open", "closed"),
    ]
    assert [step.name for step in run.of_kind("model")] == [FALLBACK, FALLBACK, PRIMARY]


async def test_an_exhausted_chain_fails_with_every_reason_and_the_partial_output(
    rig: Rig,
) -> None:
    """When every model of the chain fails, the run fails naming each one and keeps its text."""

    async def primary_answers_once(request: ModelRequest) -> ModelResponse:
        if assistant_turns(request):
            raise ModelError("503 overloaded", retryable=True)
        call = ToolCall(id="call_1", name="lookup", args={"key": "a"})
        return ModelResponse(text="draft so far", tool_calls=[call])

    async def fallback_down(request: ModelRequest) -> ModelResponse:
        del request
        raise ModelError("connection refused", retryable=True)

    primary = FunctionModel(primary_answers_once, route="function:primary")
    fallback = FunctionModel(fallback_down, route="function:fallback")
    run = await rig.run(primary, fallback)

    assert run.outcome.status is SubTaskStatus.FAILED
    assert run.outcome.reason == (
        "no model could answer (tried function:primary, function:fallback): "
        "function:primary failed: 503 overloaded; function:fallback failed: connection refused"
    )
    assert run.outcome.output == "draft so far"
    assert len(fallback.requests) == 1
    assert run.steps[-1].error == run.outcome.reason


# --- output -----------------------------------------------------------------------------------


async def test_invalid_structured_output_is_corrected_after_feedback(rig: Rig) -> None:
    """A schema error goes back to the model by name; the corrected answer completes as JSON."""
    rig.output_schema = TITLE_SCHEMA
    model = scripted([{"text": '{"title": 3}'}, {"text": '{"title": "Bees"}'}])
    run = await rig.run(model)

    assert run.outcome.status is SubTaskStatus.COMPLETED
    assert run.outcome.output == {"title": "Bees"}
    [feedback] = runtime_notes(model.requests[1].messages)
    assert feedback.startswith("[hivebus] Your answer does not satisfy the output schema")
    assert "at title: 3 is not of type 'string'" in feedback
    assert "(correction 1 of 2)" in feedback


@pytest.mark.parametrize("output_retries", [0, 2])
async def test_output_never_corrected_fails_invalid_output_with_the_last_attempt(
    rig: Rig, output_retries: int
) -> None:
    """After `output_retries` corrections the run fails `invalid_output` with the last attempt."""
    rig.output_schema = TITLE_SCHEMA
    rig.output_retries = output_retries
    attempts = [{"text": f'{{"title": {n}}}'} for n in range(output_retries + 1)]
    model = scripted([*attempts, {"text": '{"title": "too late"}'}])
    run = await rig.run(model)

    assert run.outcome.status is SubTaskStatus.FAILED
    assert run.outcome.reason.startswith("invalid_output: the answer does not match")
    assert run.outcome.reason.endswith(f"(after {output_retries} corrections)")
    assert run.outcome.output == f'{{"title": {output_retries}}}'
    assert len(model.requests) == output_retries + 1


async def test_an_invented_phone_number_is_replaced_and_a_seen_one_kept(rig: Rig) -> None:
    """An invented phone number is replaced and flagged; one a tool returned is kept."""

    @tool(tier="read", timeout_s=5.0)
    def directory(name: str) -> str:
        """Find the phone number of a desk."""
        return f"{name}: +1 555 010 0199"

    rig.tools = [directory]
    rig.validators = [contact_details]
    answer = "Call +1 555 010 0199, or the manager on +44 20 7946 0958."
    model = scripted([{"tool": "directory", "args": {"name": "front desk"}}, {"text": answer}])
    run = await rig.run(model)

    assert run.outcome.status is SubTaskStatus.COMPLETED
    assert run.outcome.output == f"Call +1 555 010 0199, or the manager on {REMOVED}."
    assert run.outcome.flags == [
        "contact: replaced phone number not found in any source: +44 20 7946 0958"
    ]


async def test_a_secret_in_a_tool_output_never_reaches_a_step_event(rig: Rig) -> None:
    """A credential a tool returns is redacted from every StepRecorded event."""
    secret = "sk-ant-api03-" + "q" * 40

    @tool(tier="read", timeout_s=5.0)
    def read_config() -> dict[str, str]:
        """Read the service configuration."""
        return {"endpoint": "https://api.example.com", "key": secret}

    rig.tools = [read_config]
    model = scripted([{"tool": "read_config", "args": {}}, {"text": "configured"}])
    run = await rig.run(model)

    assert run.outcome.status is SubTaskStatus.COMPLETED
    assert tool_results(model.requests[1])[0].result.data["key"] == secret  # the model saw it
    for step in run.steps:
        assert secret not in step.model_dump_json()
    [tool_step] = run.of_kind("tool")
    assert tool_step.output["data"] == {"endpoint": "https://api.example.com", "key": REDACTED}


# --- task budget ------------------------------------------------------------------------------


async def test_the_task_budget_refuses_the_next_call(rig: Rig) -> None:
    """A call the task budget cannot cover ends the run on `task_budget`, partial output kept."""
    per_call = TurnUsage(input_tokens=100, output_tokens=20)

    async def respond(request: ModelRequest) -> ModelResponse:
        turn = assistant_turns(request) + 1
        call = ToolCall(id=f"call_{turn}", name="lookup", args={"key": str(turn)})
        return ModelResponse(text=f"draft {turn}", tool_calls=[call], usage=per_call)

    model = FunctionModel(respond, route="function:metered", bound=per_call)
    store = MemoryLedgerStore()
    rig.budget = BudgetGate(
        BudgetLedger(store), "task-1", TaskBudget(max_tokens=300, max_cost_usd=1.0)
    )
    run = await rig.run(model)

    assert run.outcome.status is SubTaskStatus.BUDGET_EXCEEDED
    assert run.outcome.limit == "task_budget"
    assert run.outcome.reason == (
        "task budget max_tokens reached (240 used, 0 reserved, 120 needed, 300 allowed)"
    )
    assert run.outcome.output == "draft 2"
    assert len(model.requests) == 2
    assert run.steps[-1].step_kind == "model"
    assert run.steps[-1].error == run.outcome.reason
    warnings = [event for event in run.sink.side if isinstance(event, BudgetWarning)]
    assert [(w.used_tokens, w.max_tokens) for w in warnings] == [(240, 300)]
    ledger = store.states["task-1"]
    assert (ledger.used_tokens, ledger.reserved_tokens) == (240, 0)


async def test_the_cost_of_a_call_counts_the_same_in_the_ledger_and_the_usage(rig: Rig) -> None:
    """One cost per call, from the price table: what the ledger charged is what usage says."""
    heavy = {"usage": {"input_tokens": 1000, "output_tokens": 200}}
    store = MemoryLedgerStore()
    rig.budget = BudgetGate(
        BudgetLedger(store), "task-1", TaskBudget(max_tokens=100_000, max_cost_usd=10.0)
    )
    rig.price = Price(input_per_mtok=3.0, output_per_mtok=15.0)
    run = await rig.run(scripted([{**turn, **heavy} for turn in lookups("a")]))

    assert run.outcome.status is SubTaskStatus.COMPLETED
    per_call = rig.price.cost(1000, 200)
    assert run.outcome.usage.cost_usd == pytest.approx(2 * per_call)
    assert store.states["task-1"].used_cost_usd == pytest.approx(run.outcome.usage.cost_usd)
    assert [step.usage.cost_usd for step in run.of_kind("model")] == [pytest.approx(per_call)] * 2


class WarningLostSink(CollectingSink):
    """A sink that cannot deliver the budget warning (the bus drops it)."""

    async def publish(self, message: BaseModel) -> None:
        """Fail on the budget warning, keep everything else."""
        if isinstance(message, BudgetWarning):
            raise ConnectionError("bus down, budget warning lost")
        await super().publish(message)


async def test_a_budget_warning_that_cannot_be_published_does_not_end_the_call() -> None:
    """A settle crossing 80% publishes the warning; if that fails it is logged, the call answers."""
    ledger = BudgetLedger(MemoryLedgerStore())
    budget = TaskBudget(max_tokens=130, max_cost_usd=1.0)  # one call of 120 tokens is past 80%
    caller = metered_caller(ledger, budget, FakeSleep(FakeClock()), events=WarningLostSink())
    with capture_logs() as logs:
        response = await caller.call(HELLO, lambda: 300.0, ModelStep())

    assert response.text == "done"
    assert [line["event"] for line in logs if "budget" in line["event"]] == [
        "budget_warning",
        "budget_warning_lost",
    ]


def metered_caller(
    ledger: BudgetLedger,
    budget: TaskBudget,
    sleep: Callable[[float], Awaitable[None]],
    events: EventSink | None = None,
) -> ModelCaller:
    """A caller around one scripted model that answers with, and reserves, 120 tokens."""
    usage = {"input_tokens": 100, "output_tokens": 20}
    model = ScriptedModel(PRIMARY, parse_script([{"text": "done", "usage": usage}], PRIMARY))
    return ModelCaller(
        [model],
        breakers=BreakerRegistry(BreakerPolicy(), FakeClock()),
        retry=NO_RETRY,
        price_for=lambda _route: FREE,
        sleep=sleep,
        budget=BudgetGate(ledger, "task-1", budget),
        events=events,
    )


HELLO = ModelRequest(system="s", messages=[Message(role="user", text="hello")])


async def test_a_call_blocked_by_another_calls_reservation_waits_for_it() -> None:
    """A call that only in-flight reservations block waits (bounded) until they settle."""
    store = MemoryLedgerStore()
    ledger = BudgetLedger(store)
    budget = TaskBudget(max_tokens=200, max_cost_usd=1.0)
    other, _, _ = await ledger.reserve("task-1", budget, 150, 0.0)
    assert other is not None
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:  # the other call settles while this one waits
            await ledger.settle(other, 50, 0.0)

    response = await metered_caller(ledger, budget, sleep).call(HELLO, lambda: 300.0, ModelStep())

    assert response.text == "done"
    assert len(slept) == 2
    state = store.states["task-1"]
    assert (state.used_tokens, state.reserved_tokens) == (170, 0)


async def test_a_call_does_not_wait_for_reservations_past_its_time() -> None:
    """A call blocked by in-flight reservations is refused at once when no time is left to wait."""
    ledger = BudgetLedger(MemoryLedgerStore())
    budget = TaskBudget(max_tokens=200, max_cost_usd=1.0)
    await ledger.reserve("task-1", budget, 150, 0.0)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    caller = metered_caller(ledger, budget, sleep)
    with pytest.raises(BudgetRefusedError, match=r"max_tokens reached \(0 used, 150 reserved"):
        await caller.call(HELLO, lambda: 0.001, ModelStep())
    assert slept == []


# --- known bugs -------------------------------------------------------------------------------

PASSWORD = "hunter2hunter2"  # noqa: S105 - a fake credential the redaction must catch


@tool(tier="read", timeout_s=5.0)
def login() -> str:
    """Log in to the service."""
    raise PermissionError(f"login refused for password={PASSWORD}")


async def test_a_secret_in_a_tool_error_never_reaches_a_step_event(rig: Rig) -> None:
    """A credential quoted in a tool's exception is redacted from the step's `error` too."""
    rig.tools = [login]
    run = await rig.run(scripted([{"tool": "login", "args": {}}, {"text": "cannot log in"}]))

    assert run.outcome.status is SubTaskStatus.COMPLETED
    for step in run.steps:
        assert PASSWORD not in step.model_dump_json()


async def test_a_secret_in_a_tool_error_never_reaches_the_logs(rig: Rig) -> None:
    """A credential quoted in a tool's exception does not appear in any log line."""
    rig.tools = [login]
    with capture_logs() as logs:
        run = await rig.run(scripted([{"tool": "login", "args": {}}, {"text": "cannot log in"}]))

    assert run.outcome.status is SubTaskStatus.COMPLETED
    assert logs
    assert PASSWORD not in repr(logs)


async def test_a_run_out_of_time_does_not_count_against_a_healthy_tool(
    tool_context: ToolContext,
) -> None:
    """A tool call cut short because the run's time is up says nothing about the tool's health."""

    @tool(tier="read", timeout_s=5.0)
    async def fetch() -> str:
        """Fetch the page (takes 50 ms, well inside its own 5 s timeout)."""
        await asyncio.sleep(0.05)
        return "page"

    breakers = BreakerRegistry(BreakerPolicy(failure_threshold=2), FakeClock())
    runner = ToolRunner(Toolbox([fetch], [Tier.READ]), breakers=breakers, retry=NO_RETRY)
    results: list[ToolResult] = []
    for _ in range(2):
        step = await runner.call("fetch", {}, tool_context, time_left=lambda: 0.01)
        results.append(step.result)

    assert [r.error.kind if r.error else None for r in results] == [ToolErrorKind.TIMEOUT] * 2
    assert breakers.get("tool:fetch").state is BreakerState.CLOSED
