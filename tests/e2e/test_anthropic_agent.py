"""The real Anthropic SDK path end to end, against a fake Messages API on 127.0.0.1.

The agent builds `anthropic:claude-test` with the official SDK pointed at the fake server;
the orchestrator, the agent and the task-budget ledger run on a real nats-server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_anthropic import FakeAnthropic, Reply, error, text, tool_use
from hivetest import write_script
from nats.js.errors import KeyNotFoundError

from hivebus.console.client import HiveClient
from hivebus.console.stack import LocalStack
from hivebus.contracts import (
    BreakerChanged,
    StepRecorded,
    SubTaskStatus,
    TaskFinished,
    TaskStatus,
    subjects,
)
from hivebus.core import EmbeddedNats, HivebusConfig, Settings, jetstream, load_config
from hivebus.core.budget import LedgerState

pytestmark = pytest.mark.e2e

ROUTE = "anthropic:claude-test"
NOTE = "Bees visit about two million flowers for one pound of honey."
RETRY = {"attempts": 2, "initial_s": 0.05, "max_s": 0.5, "jitter_s": 0}
"""Two attempts per model call, short backoff; `max_s` leaves room for a 0.2 s retry-after."""


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    """A fake Messages API for one test; it answers 400 when no reply is queued."""
    with FakeAnthropic() as server:
        yield server


def _config(tmp_path: Path, model: str | list[str], **role: Any) -> HivebusConfig:
    data = {
        "workspace": "workspace",
        "prices": {ROUTE: {"input_per_mtok": 3, "output_per_mtok": 15}},
        "roles": {
            "assistant": {
                "system": "You answer questions about bees.",
                "model": model,
                "tools": ["hivebus.agent.tools.workspace:read_file"],
                "tiers": ["read"],
                "retry": RETRY,
                **role,
            }
        },
    }
    path = tmp_path / "hivebus.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    config = load_config(path)
    config.workspace_dir().mkdir(parents=True, exist_ok=True)
    (config.workspace_dir() / "notes.md").write_text(NOTE, encoding="utf-8")
    (config.workspace_dir() / "hive.md").write_text("A hive holds one queen.", encoding="utf-8")
    return config


def _settings(server: EmbeddedNats, fake: FakeAnthropic) -> Settings:
    return Settings(
        nats_url=server.url,
        anthropic_api_key="test-key",
        anthropic_base_url=fake.url,
        orchestrator_ack_wait_s=2.0,
        work_ack_wait_s=5.0,
        heartbeat_s=1.0,
    )


@dataclass
class Outcome:
    """What one task published, and its ledger at the end."""

    events: list[Any]
    ledger: LedgerState | None

    @property
    def result(self) -> TaskFinished:
        """The last event."""
        last = self.events[-1]
        assert isinstance(last, TaskFinished), last
        return last

    def steps(self, kind: str) -> list[StepRecorded]:
        """Step events of one kind (`model` or `tool`)."""
        return [e for e in self.events if isinstance(e, StepRecorded) and e.step_kind == kind]


ASK = [{"id": "ask", "role": "assistant", "prompt": "How busy are bees?"}]


async def _run(
    nats_server: EmbeddedNats,
    fake: FakeAnthropic,
    config: HivebusConfig,
    task_id: str,
    *,
    subtasks: list[dict[str, Any]] | None = None,
    budget: dict[str, Any] | None = None,
) -> Outcome:
    settings = _settings(nats_server, fake)
    body: dict[str, Any] = {
        "task_id": task_id,
        "goal": "answer a question about bees",
        "plan": {"subtasks": subtasks or ASK},
    }
    if budget is not None:
        body["budget"] = budget
    events: list[Any] = []
    async with LocalStack(settings, config) as stack, HiveClient(stack.url, settings) as client:
        await client.submit(body)
        async with asyncio.timeout(30):
            async for _, event in client.follow(task_id):
                events.append(event)
        js = await jetstream(client.broker)
        kv = await js.key_value(subjects.TASKS_BUCKET)
        try:
            entry = await kv.get(f"{task_id}.{subjects.LEDGER_KEY_SUFFIX}")
        except KeyNotFoundError:  # no model call ever reserved anything
            ledger = None
        else:
            ledger = LedgerState.model_validate_json(entry.value) if entry.value else None
    return Outcome(events=events, ledger=ledger)


@pytest.mark.parametrize(
    ("failure", "delay_s"),
    [(error(429, retry_after="0.2"), 0.2), (error(500), 0.05), (error(529), 0.05)],
    ids=["429-retry-after", "500", "529"],
)
async def test_transient_error_is_retried_once_then_answered(
    tmp_path: Path, nats_server: EmbeddedNats, fake: FakeAnthropic, failure: Reply, delay_s: float
) -> None:
    """A 429 (after its retry-after), 500 or 529 is retried once, then the answer completes."""
    status = failure.status
    fake.queue(failure, text("Very busy.", 321, 12))
    out = await _run(nats_server, fake, _config(tmp_path, ROUTE), f"retry-{status}")

    assert out.result.status == TaskStatus.COMPLETED
    assert out.result.output == {"ask": "Very busy."}
    (step,) = out.steps("model")
    assert step.name == ROUTE
    (retry,) = step.retries
    assert retry.target == ROUTE
    assert str(status) in retry.error
    assert retry.delay_s == pytest.approx(delay_s)
    assert out.result.usage.retries == 1
    assert step.usage.input_tokens == 321
    assert step.usage.output_tokens == 12
    assert (out.result.usage.input_tokens, out.result.usage.output_tokens) == (321, 12)
    assert len(fake.requests) == 2
    for seen in fake.requests:
        assert seen.path == "/v1/messages"
        key = seen.headers.get("x-api-key") or seen.headers.get("authorization", "")
        assert key.removeprefix("Bearer ") == "test-key"
        assert seen.body["model"] == "claude-test"


async def test_tool_use_runs_the_tool_and_returns_its_result(
    tmp_path: Path, nats_server: EmbeddedNats, fake: FakeAnthropic
) -> None:
    """A tool_use turn runs the tool; the next request carries its tool_result block."""
    fake.queue(
        tool_use("read_file", {"path": "notes.md"}, call_id="toolu_01"),
        text("Two million flowers per pound."),
    )
    out = await _run(nats_server, fake, _config(tmp_path, ROUTE), "tool-use")

    assert out.result.status == TaskStatus.COMPLETED
    assert out.result.output == {"ask": "Two million flowers per pound."}
    (tool_step,) = out.steps("tool")
    assert tool_step.name == "read_file"
    assert tool_step.output == {"ok": True, "data": NOTE, "error": None}

    first, second = (seen.body for seen in fake.requests)
    assert [t["name"] for t in first["tools"]] == ["read_file"]
    assert first["tools"][0]["input_schema"]["required"] == ["path"]
    assistant, results = second["messages"][-2:]
    assert assistant["role"] == "assistant"
    assert assistant["content"][-1] == {
        "type": "tool_use",
        "id": "toolu_01",
        "name": "read_file",
        "input": {"path": "notes.md"},
    }
    assert results["role"] == "user"
    (block,) = results["content"]
    assert block["type"] == "tool_result"
    assert block["tool_use_id"] == "toolu_01"
    assert block["is_error"] is False
    assert json.loads(block["content"])["data"] == NOTE


async def test_overloaded_primary_opens_its_breaker_and_the_fallback_answers(
    tmp_path: Path, nats_server: EmbeddedNats, fake: FakeAnthropic
) -> None:
    """A primary answering 529 every time opens its breaker; the scripted fallback answers."""
    fake.then = error(529)
    fallback = write_script(
        tmp_path,
        "fallback.yaml",
        [
            {"tool": "read_file", "args": {"path": "notes.md"}},
            {"tool": "read_file", "args": {"path": "hive.md"}},
            {"text": "Answered by the fallback."},
        ],
    )
    config = _config(
        tmp_path,
        [ROUTE, fallback],
        breaker={"failure_threshold": 2, "reset_after_s": 60},
    )
    out = await _run(nats_server, fake, config, "overloaded")

    assert out.result.status == TaskStatus.COMPLETED
    assert out.result.output == {"ask": "Answered by the fallback."}
    breakers = [e for e in out.events if isinstance(e, BreakerChanged)]
    assert [(b.breaker, b.old, b.new) for b in breakers] == [(f"model:{ROUTE}", "closed", "open")]
    models = out.steps("model")
    assert [s.name for s in models] == [fallback] * 3
    # Steps 1 and 2: two attempts each at the primary (one retried), then the fallback.
    assert [len(s.retries) for s in models] == [1, 1, 0]
    assert not any("closed -> open" in note for note in models[1].notes)  # an event, not a note
    # Step 3: the breaker is open, the primary is skipped without a request.
    assert any("circuit open" in n and "skipped" in n for n in models[2].notes), models[2].notes
    assert len(fake.requests) == 4


async def test_reported_usage_reaches_task_usage_cost_and_ledger(
    tmp_path: Path, nats_server: EmbeddedNats, fake: FakeAnthropic
) -> None:
    """The tokens the endpoint reports are the task's usage, priced, and settled in its ledger."""
    fake.queue(
        tool_use("read_file", {"path": "notes.md"}, input_tokens=1200, output_tokens=300),
        text("Busy.", input_tokens=1500, output_tokens=200),
    )
    out = await _run(nats_server, fake, _config(tmp_path, ROUTE), "usage")

    result = out.result
    assert result.status == TaskStatus.COMPLETED
    (sub,) = result.subtasks
    assert sub.status == SubTaskStatus.COMPLETED
    for usage in (result.usage, sub.usage):
        assert usage.input_tokens == 2700
        assert usage.output_tokens == 500
        assert usage.cost_usd == pytest.approx((2700 * 3 + 500 * 15) / 1e6)
    assert [s.usage.tokens for s in out.steps("model")] == [1500, 1700]
    assert out.ledger is not None
    assert out.ledger.used_tokens == 3200
    assert out.ledger.used_cost_usd == pytest.approx(0.0156)
    assert out.ledger.reserved_tokens == 0


async def test_run_with_a_small_token_limit_still_calls_the_model(
    tmp_path: Path, nats_server: EmbeddedNats, fake: FakeAnthropic
) -> None:
    """A run limited to 4000 tokens asks for fewer output tokens rather than never calling."""
    fake.queue(text("Busy.", input_tokens=300, output_tokens=20))
    config = _config(tmp_path, ROUTE, limits={"max_tokens": 4000})
    out = await _run(nats_server, fake, config, "small-limit")

    assert len(fake.requests) == 1
    assert out.result.status == TaskStatus.COMPLETED


async def test_parallel_runs_wait_for_reservations_instead_of_failing(
    tmp_path: Path, nats_server: EmbeddedNats, fake: FakeAnthropic
) -> None:
    """Three parallel runs of a 10,000-token task, each using 110 tokens, all complete."""
    # Each call holds its bound (~4200 tokens) for the half second the endpoint takes.
    fake.then = text("Busy.", input_tokens=100, output_tokens=10, delay_s=0.5)
    config = _config(tmp_path, ROUTE, concurrency=3)
    limits = {"max_tokens": 10_000}
    subtasks = [
        {"id": f"ask-{i}", "role": "assistant", "prompt": "How busy?", "limits": limits}
        for i in range(3)
    ]
    out = await _run(nats_server, fake, config, "parallel", subtasks=subtasks, budget=limits)

    assert [s.status for s in out.result.subtasks] == [SubTaskStatus.COMPLETED] * 3
    assert out.ledger is not None
    assert out.ledger.used_tokens == 330


ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"flowers": {"type": "integer"}},
    "required": ["flowers"],
}


@pytest.mark.parametrize("tools", [["hivebus.agent.tools.workspace:read_file"], []])
async def test_an_output_schema_is_asked_for_as_structured_output(
    tmp_path: Path, nats_server: EmbeddedNats, fake: FakeAnthropic, tools: list[str]
) -> None:
    """The schema travels as a tool to answer with; the model's call of it is the output."""
    fake.queue(
        tool_use("hivebus_final_answer", {"flowers": 2_000_000}, call_id="toolu_09"),
    )
    config = _config(tmp_path, ROUTE, tools=tools)
    subtasks = [{**ASK[0], "output_schema": ANSWER_SCHEMA}]
    out = await _run(nats_server, fake, config, "structured", subtasks=subtasks)

    assert out.result.status == TaskStatus.COMPLETED, out.result.reason
    assert out.result.output == {"ask": {"flowers": 2_000_000}}
    assert out.steps("tool") == []  # the answer is no tool call of the run
    (first,) = (seen.body for seen in fake.requests)
    answer = first["tools"][-1]
    assert answer["name"] == "hivebus_final_answer"
    assert answer["input_schema"] == ANSWER_SCHEMA
    if tools:
        assert "tool_choice" not in first  # other tools first, then the answer
    else:
        assert first["tool_choice"] == {"type": "tool", "name": "hivebus_final_answer"}
