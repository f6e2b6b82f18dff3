"""The agent's spans and metrics, read from the SDK's in-memory exporter and reader.

The service is driven without a server: a `FakeWork` message carrying the sub-task span's
`traceparent` goes through the real `Settler` into `AgentService.work`, with scripted models,
tools of this module, checkpoints in a `FakeKV`. The harness (`Worker`) is shared with the
other `test_tracing_*` modules; the `traced` fixtures (conftest) install the telemetry.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from hivebus.agent.checkpoint import CheckpointStore
from hivebus.agent.errors import ToolFailure
from hivebus.agent.role import RoleRuntime
from hivebus.agent.service import AgentBus, AgentService
from hivebus.agent.tool import Tool, tool
from hivebus.agent.toolbox import Toolbox
from hivebus.agent.tracing import model_of, provider_of
from hivebus.contracts import (
    Limits,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStatus,
    TaskBudget,
    Tier,
    ToolErrorKind,
    subjects,
)
from hivebus.contracts.runs import RunCheckpoint
from hivebus.core import Settings, Settler, telemetry
from hivebus.core.budget import BudgetLedger, MemoryLedgerStore

from .fakes import CollectingSink, FakeKV, FakeWork, Traced
from .test_service import answering, config_with

ROLE, TASK, SUBTASK, KIND = "writer", "t-1", "s-1", "draft"
TRACE = telemetry.trace_id_for(TASK)
SUBTASK_SPAN = telemetry.span_id_for(TASK, SUBTASK, "subtask")
HEADERS = {"traceparent": telemetry.traceparent(TRACE, SUBTASK_SPAN)}
"""What the orchestrator's dispatch carries: the sub-task's span."""

CONTENT_KEYS = {
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
}
NO_RETRY_DELAY = {"initial_s": 0.0, "max_s": 0.0, "jitter_s": 0.0}


# --- the harness --------------------------------------------------------------------------------


def assignment(**extra: Any) -> SubTaskAssigned:
    """The sub-task every tracing test runs (kind `draft`)."""
    fields: dict[str, Any] = {"limits": Limits(), "subtask_kind": KIND, **extra}
    return SubTaskAssigned(
        task_id=TASK, subtask_id=SUBTASK, role=ROLE, goal="Write.", prompt="Say hi.", **fields
    )


class Worker:
    """One agent service of the `writer` role, with every connection faked."""

    def __init__(
        self,
        directory: Path,
        model: str | list[str],
        tools: Sequence[Tool] = (),
        approve: Sequence[Tier] = (),
        **role: Any,
    ) -> None:
        """Serve `model` (a route or a chain) with `tools` (read tier free, `approve` asked)."""
        runtime = RoleRuntime(Settings(), config_with(directory, model, **role), ROLE)
        runtime.toolbox = Toolbox(tools, [Tier.READ], approve_tiers=approve)
        self.sink = CollectingSink()
        self.runs = FakeKV()
        bus = AgentBus(
            publisher=self.sink,
            settler=Settler(self.sink, 0.0),
            tasks=FakeKV(),  # type: ignore[arg-type]
            checkpoints=CheckpointStore(self.runs),  # type: ignore[arg-type]
            ledger=BudgetLedger(MemoryLedgerStore()),
        )
        self.service = AgentService(Settings(), runtime, bus)

    async def deliver(
        self,
        work: SubTaskAssigned | None = None,
        *,
        delivered: int = 1,
        waited_s: float = 2.0,
        headers: dict[str, str] | None = None,
    ) -> FakeWork:
        """Hand the handler one delivery of `work`, stored `waited_s` ago; return it settled."""
        work = work or assignment()
        message = FakeWork(
            work,
            headers=HEADERS if headers is None else headers,
            delivered=delivered,
            stored_at=datetime.now(UTC) - timedelta(seconds=waited_s),
        )
        await self.service.bus.settler.run(message, self.service.work(work, message))  # type: ignore[arg-type]
        return message

    def finished(self) -> SubTaskFinished:
        """The one terminal event published."""
        [event] = [e for e in self.sink.side if isinstance(e, SubTaskFinished)]
        return event

    def checkpoint(self) -> RunCheckpoint:
        """The run's checkpoint as stored."""
        value, _ = self.runs.values[subjects.checkpoint_key(TASK, SUBTASK, 1)]
        return RunCheckpoint.model_validate_json(value)


@tool(tier="read")
def echo(text: str) -> str:
    """Say `text` back."""
    return text


@tool(tier="read")
def broken() -> str:
    """Always fail."""
    raise ToolFailure("the disk is full", "free some space", ToolErrorKind.PERMANENT)


def flaky_tool() -> Tool:
    """A tool that fails transiently once, then answers."""
    calls: list[int] = []

    @tool(tier="read", name="flaky")
    def flaky() -> str:
        """Fail once, then answer."""
        calls.append(1)
        if len(calls) == 1:
            raise ToolFailure("busy", "try again", ToolErrorKind.TRANSIENT)
        return "fine"

    return flaky


def parent_id(span: ReadableSpan) -> int | None:
    """The span id of a span's parent (None for a root)."""
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    """A span's own id."""
    assert span.context is not None
    return span.context.span_id


# --- the span tree ------------------------------------------------------------------------------


def test_providers_and_models_come_from_the_route() -> None:
    """`anthropic:x` is provider `anthropic`, model `x`; scripted models are `hivebus.scripted`."""
    assert (
        provider_of("anthropic:claude-sonnet-4-5"),
        model_of("anthropic:claude-sonnet-4-5"),
    ) == (
        "anthropic",
        "claude-sonnet-4-5",
    )
    assert (provider_of("scripted:/s/w.yaml"), model_of("scripted:/s/w.yaml")) == (
        "hivebus.scripted",
        "/s/w.yaml",
    )


async def test_a_run_is_an_invoke_agent_span_over_its_chat_and_tool_spans(
    tmp_path: Path, traced: Traced
) -> None:
    """The sub-task's span parents queue_wait and invoke_agent; chat and execute_tool are its."""
    route = answering(tmp_path, {"tool": "echo", "args": {"text": "hi"}}, {"text": "done"})
    worker = Worker(tmp_path, route, [echo])
    message = await worker.deliver(waited_s=3.0)
    finished = worker.finished()
    assert message.settled == ["ack"]
    assert (finished.subtask_kind, finished.model) == (KIND, route)

    wait, run = traced.one("queue_wait "), traced.one("invoke_agent ")
    assert wait.name == f"queue_wait {SUBTASK}"
    assert run.name == f"invoke_agent {ROLE}"
    for span in (wait, run):
        assert span.context is not None
        assert span.context.trace_id == TRACE
        assert parent_id(span) == SUBTASK_SPAN
    assert wait.start_time is not None
    assert wait.end_time is not None
    assert run.start_time is not None
    assert 2.9 < (wait.end_time - wait.start_time) / 1e9 < 10
    assert wait.end_time <= run.start_time
    chats, [call] = traced.named("chat "), traced.named("execute_tool ")
    assert [parent_id(s) for s in [*chats, call]] == [span_id(run)] * 3

    model = model_of(route)
    assert {
        k: v for k, v in (run.attributes or {}).items() if not k.startswith("hivebus.usage")
    } == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": ROLE,
        "gen_ai.provider.name": "hivebus.scripted",
        "gen_ai.request.model": model,
        "hivebus.task.id": TASK,
        "hivebus.subtask.id": SUBTASK,
        "hivebus.subtask.kind": KIND,
        "hivebus.run.id": finished.run_id,
        "hivebus.attempt": 1,
        "hivebus.run.status": "completed",
        "hivebus.run.reason": "final answer given",
    }
    assert run.status.status_code is StatusCode.UNSET

    assert [c.name for c in chats] == [f"chat {model}"] * 2
    assert [(c.attributes or {})["gen_ai.response.finish_reasons"] for c in chats] == [
        ("tool_call",),
        ("stop",),
    ]
    for chat in chats:
        attributes = chat.attributes or {}
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.provider.name"] == "hivebus.scripted"
        assert attributes["gen_ai.request.model"] == model
        assert attributes["gen_ai.response.model"] == model
        assert "error.type" not in attributes

    tool_attributes = dict(call.attributes or {})
    assert tool_attributes == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "echo",
        "gen_ai.tool.call.id": "call_1",
        "gen_ai.tool.type": "function",
        "hivebus.tool.tier": "read",
        "hivebus.tool.idempotency_key": f"{finished.run_id}:2:call_1",
    }
    assert call.status.status_code is StatusCode.UNSET


async def test_usage_is_on_chat_spans_only_and_adds_up_to_the_run(
    tmp_path: Path, traced: Traced
) -> None:
    """`gen_ai.usage.*` is on chat spans only, adding up to the run's `hivebus.usage.*`."""
    route = answering(
        tmp_path,
        {"tool": "echo", "args": {"text": "hi"}, "usage": {"input_tokens": 30, "output_tokens": 5}},
        {"text": "done", "usage": {"input_tokens": 50, "output_tokens": 7}},
    )
    worker = Worker(tmp_path, route, [echo])
    await worker.deliver()
    usage = worker.finished().usage

    chats = traced.named("chat ")
    assert [
        (
            (c.attributes or {})["gen_ai.usage.input_tokens"],
            (c.attributes or {})["gen_ai.usage.output_tokens"],
        )
        for c in chats
    ] == [(30, 5), (50, 7)]
    assert (usage.input_tokens, usage.output_tokens) == (80, 12)
    others = [s for s in traced.spans if not s.name.startswith("chat ")]
    assert others
    assert not [k for s in others for k in s.attributes or {} if k.startswith("gen_ai.usage.")]
    run = traced.one("invoke_agent ").attributes or {}
    assert (run["hivebus.usage.input_tokens"], run["hivebus.usage.output_tokens"]) == (80, 12)
    assert run["hivebus.usage.steps"] == usage.steps == 3


# --- failures, retries, fallbacks, breakers ----------------------------------------------------


async def test_a_failed_tool_call_shows_its_error_kind_on_its_span_and_in_tool_errors(
    tmp_path: Path, traced: Traced
) -> None:
    """A tool's structured error is `error.type` and `hivebus.tool.error_kind`, and is counted."""
    worker = Worker(
        tmp_path, answering(tmp_path, {"tool": "broken"}, {"text": "gave up"}), [broken]
    )
    await worker.deliver()

    call = traced.one("execute_tool broken")
    attributes = call.attributes or {}
    assert (attributes["error.type"], attributes["hivebus.tool.error_kind"]) == (
        "permanent",
        "permanent",
    )
    assert call.status.status_code is StatusCode.ERROR
    assert call.status.description == "the disk is full"
    assert traced.points("hivebus.tool.errors") == [
        (
            {
                "gen_ai.tool.name": "broken",
                "hivebus.tool.error_kind": "permanent",
                "hivebus.role": ROLE,
                "hivebus.subtask.kind": KIND,
            },
            1,
        )
    ]
    [(duration, _)] = traced.points("gen_ai.execute_tool.duration")
    assert duration["error.type"] == "permanent"
    # the run itself went on and completed: a failed call is the model's to handle
    assert traced.one("invoke_agent ").status.status_code is StatusCode.UNSET


async def test_a_retry_and_a_fallback_are_events_on_the_chat_span(
    tmp_path: Path, traced: Traced
) -> None:
    """The primary fails (retried once), the fallback answers: one chat span, named after it."""
    primary = f"scripted:{tmp_path / 'primary.yaml'}"
    (tmp_path / "primary.yaml").write_text("- error: server_error\n- then: repeat\n", "utf-8")
    fallback = answering(tmp_path, {"text": "from the fallback"})
    worker = Worker(tmp_path, [primary, fallback], retry={"attempts": 2, **NO_RETRY_DELAY})
    await worker.deliver()
    assert worker.finished().model == fallback

    chat = traced.one("chat ")
    assert chat.name == f"chat {model_of(fallback)}"
    assert (chat.attributes or {})["gen_ai.request.model"] == model_of(fallback)
    events = [(e.name, dict(e.attributes or {})) for e in chat.events]
    assert [name for name, _ in events] == ["gen_ai.retry", "gen_ai.fallback"]
    retry, moved = events[0][1], events[1][1]
    assert (retry["attempt"], retry["hivebus.retry.target"], retry["hivebus.retry.name"]) == (
        1,
        "model",
        primary,
    )
    assert "500" in str(retry["error"])
    assert (moved["from"], moved["to"]) == (primary, fallback)
    assert "500" in str(moved["why"])
    assert traced.points("hivebus.retries") == [
        ({"hivebus.retry.target": "model", "hivebus.role": ROLE, "hivebus.subtask.kind": KIND}, 1)
    ]


async def test_a_tool_retry_is_an_event_on_the_tool_span(tmp_path: Path, traced: Traced) -> None:
    """A transient tool failure tried again shows as `gen_ai.retry` on its execute_tool span."""
    route = answering(tmp_path, {"tool": "flaky"}, {"text": "done"})
    worker = Worker(tmp_path, route, [flaky_tool()], retry={"attempts": 2, **NO_RETRY_DELAY})
    await worker.deliver()

    call = traced.one("execute_tool flaky")
    assert [e.name for e in call.events] == ["gen_ai.retry"]
    assert (call.events[0].attributes or {})["hivebus.retry.target"] == "tool"
    assert call.status.status_code is StatusCode.UNSET  # the second try answered
    assert [a["hivebus.retry.target"] for a, _ in traced.points("hivebus.retries")] == ["tool"]


async def test_a_breaker_change_is_an_event_on_the_span_of_the_call_that_caused_it(
    tmp_path: Path, traced: Traced
) -> None:
    """The primary's breaker opening is `breaker_changed` on the chat span, and counted."""
    primary = f"scripted:{tmp_path / 'primary.yaml'}"
    (tmp_path / "primary.yaml").write_text("- error: server_error\n- then: repeat\n", "utf-8")
    fallback = answering(tmp_path, {"text": "from the fallback"})
    worker = Worker(
        tmp_path,
        [primary, fallback],
        retry={"attempts": 1},
        breaker={"failure_threshold": 1, "reset_after_s": 60},
    )
    await worker.deliver()

    chat = traced.one("chat ")
    [changed] = [e for e in chat.events if e.name == "breaker_changed"]
    assert dict(changed.attributes or {}) == {
        "hivebus.breaker": f"model:{primary}",
        "old": "closed",
        "new": "open",
    }
    assert traced.points("hivebus.breaker.opens") == [
        (
            {
                "hivebus.breaker": f"model:{primary}",
                "hivebus.role": ROLE,
                "hivebus.subtask.kind": KIND,
            },
            1,
        )
    ]


async def test_a_run_stopped_by_a_limit_fails_its_span_and_counts_the_limit(
    tmp_path: Path, traced: Traced
) -> None:
    """`max_steps` reached: the run span is an error (`budget_exceeded`) naming the limit."""
    route = answering(tmp_path, {"tool": "echo", "args": {"text": "a"}}, {"text": "never"})
    worker = Worker(tmp_path, route, [echo])
    await worker.deliver(assignment(limits=Limits(max_steps=1)))

    run = traced.one("invoke_agent ")
    attributes = run.attributes or {}
    assert run.status.status_code is StatusCode.ERROR
    assert (attributes["error.type"], attributes["hivebus.run.status"]) == (
        "budget_exceeded",
        "budget_exceeded",
    )
    assert attributes["hivebus.run.limit"] == "max_steps"
    assert traced.points("hivebus.limit.exceeded") == [
        ({"hivebus.limit": "max_steps", "hivebus.role": ROLE, "hivebus.subtask.kind": KIND}, 1)
    ]


async def test_a_budget_warning_is_an_event_on_the_chat_span_that_crossed_it(
    tmp_path: Path, traced: Traced
) -> None:
    """The model call that takes the task past 80% of its budget carries `budget_warning`."""
    route = answering(
        tmp_path, {"text": "done", "usage": {"input_tokens": 800, "output_tokens": 100}}
    )
    worker = Worker(tmp_path, route)
    await worker.deliver(assignment(budget=TaskBudget(max_tokens=1000)))

    [warning] = [e for e in traced.one("chat ").events if e.name == "budget_warning"]
    attributes = warning.attributes or {}
    assert (attributes["hivebus.budget.used_tokens"], attributes["hivebus.budget.max_tokens"]) == (
        900,
        1000,
    )


# --- content, and telemetry off -----------------------------------------------------------------


async def test_no_content_is_on_any_span_unless_capture_content_is_on(
    tmp_path: Path, traced: Traced
) -> None:
    """By default prompts, completions and tool arguments and results stay off the spans."""
    route = answering(tmp_path, {"tool": "echo", "args": {"text": "hi"}}, {"text": "done"})
    await Worker(tmp_path, route, [echo]).deliver()
    assert len(traced.spans) == 5
    assert not [k for s in traced.spans for k in s.attributes or {} if k in CONTENT_KEYS]


async def test_with_capture_content_the_spans_carry_prompts_completions_and_tool_calls(
    tmp_path: Path, traced_content: Traced
) -> None:
    """The convention's content attributes are there, as JSON, secrets redacted."""
    secret = "sk-ant-" + "a" * 40
    route = answering(
        tmp_path, {"tool": "echo", "args": {"text": f"key {secret}"}}, {"text": "done"}
    )
    await Worker(tmp_path, route, [echo]).deliver()

    first = traced_content.named("chat ")[0].attributes or {}
    assert json.loads(str(first["gen_ai.system_instructions"])) == [
        {"type": "text", "content": "You write."}
    ]
    [asked] = json.loads(str(first["gen_ai.input.messages"]))
    assert asked["role"] == "user"
    assert asked["parts"][0]["content"].startswith("Say hi.")
    [answer] = json.loads(str(first["gen_ai.output.messages"]))
    assert answer["finish_reason"] == "tool_call"
    assert answer["parts"] == [
        {
            "type": "tool_call",
            "id": "call_1",
            "name": "echo",
            "arguments": {"text": "key [redacted secret]"},
        }
    ]
    call = traced_content.one("execute_tool echo").attributes or {}
    assert json.loads(str(call["gen_ai.tool.call.arguments"])) == {"text": "key [redacted secret]"}
    assert json.loads(str(call["gen_ai.tool.call.result"])) == "key [redacted secret]"
    assert secret not in json.dumps([dict(s.attributes or {}) for s in traced_content.spans])


async def test_with_telemetry_off_nothing_is_traced_or_kept(tmp_path: Path) -> None:
    """Not installed: the run completes, and its checkpoint holds no run span record."""
    exporter = InMemorySpanExporter()  # never installed: a trace would have nowhere to go
    assert not telemetry.current().enabled
    route = answering(tmp_path, {"tool": "echo", "args": {"text": "hi"}}, {"text": "done"})
    worker = Worker(tmp_path, route, [echo])
    await worker.deliver()
    assert worker.finished().status is SubTaskStatus.COMPLETED
    assert worker.checkpoint().trace is None
    assert exporter.get_finished_spans() == ()


# --- metrics ------------------------------------------------------------------------------------


async def test_every_agent_metric_carries_the_role_and_the_subtask_kind(
    tmp_path: Path, traced: Traced
) -> None:
    """Tokens, durations, steps and cost are recorded, each by role and sub-task kind."""
    route = answering(
        tmp_path,
        {"tool": "echo", "args": {"text": "hi"}, "usage": {"input_tokens": 30, "output_tokens": 5}},
        {"text": "done", "usage": {"input_tokens": 50, "output_tokens": 7}},
    )
    await Worker(tmp_path, route, [echo]).deliver()

    names = [
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
        "gen_ai.execute_tool.duration",
        "gen_ai.invoke_agent.duration",
        "hivebus.run.steps",
        "hivebus.cost",
    ]
    for name in names:
        points = traced.points(name)
        assert points, name
        for attributes, _ in points:
            assert (attributes["hivebus.role"], attributes["hivebus.subtask.kind"]) == (ROLE, KIND)
    tokens = {a["gen_ai.token.type"]: v for a, v in traced.points("gen_ai.client.token.usage")}
    assert tokens == {"input": 80, "output": 12}
    [(steps_of, steps)] = traced.points("hivebus.run.steps")
    assert (steps_of["hivebus.run.status"], steps) == ("completed", 3)
    [(run_of, _)] = traced.points("gen_ai.invoke_agent.duration")
    assert run_of["hivebus.run.status"] == "completed"
    [(chat_of, _)] = traced.points("gen_ai.client.operation.duration")
    assert (chat_of["gen_ai.provider.name"], chat_of["gen_ai.operation.name"]) == (
        "hivebus.scripted",
        "chat",
    )
