"""Parallel runs of one task share its budget through the KV ledger, on a real nats-server.

Three sub-tasks of one task run at once, each wanting 4 model turns of 1000 tokens, against a
task budget of 9000 tokens: the ledger lets 9 turns through in whatever order the runs take
them, and the runs that find it exhausted stop `budget_exceeded` with what they had so far.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hivetest import write_config, write_script
from pydantic import BaseModel

from hivebus.console.client import HiveClient
from hivebus.console.stack import LocalStack
from hivebus.contracts import (
    BudgetWarning,
    StepRecorded,
    SubTaskStatus,
    TaskFinished,
    TaskStatus,
    subjects,
)
from hivebus.contracts.subjects import EventKind
from hivebus.core import HivebusConfig, Settings, jetstream
from hivebus.core.budget import LedgerState

pytestmark = pytest.mark.e2e

TURN = {"input_tokens": 900, "output_tokens": 100}
TURN_TOKENS = 1000
TURNS_PER_RUN = 4
RUNS = 3
BUDGET = 9000
"""Room for 9 of the 12 turns the three runs want."""

DRAFT = "Draft: bees make honey; details to follow."
FINAL = {"topic": "bees", "facts": 2}
SCHEMA = {
    "type": "object",
    "required": ["topic", "facts"],
    "properties": {"topic": {"type": "string"}, "facts": {"type": "integer"}},
}


DELAYS = [(0.02, 0.02, 0.02), (0.0, 0.03, 0.03), (0.0, 0.0, 0.06)]
"""Per round, how late each run's model answers: in lockstep, one run fast, one run slow."""


def _script(tmp_path: Path, name: str, delay_s: float) -> str:
    # A draft first (not JSON: sent back for correction, and the partial output from then
    # on), two lookups, then the JSON answer.
    turn = {"usage": TURN, "delay_s": delay_s}
    return write_script(
        tmp_path,
        name,
        [
            {"text": DRAFT, **turn},
            {"tool": "read_file", "args": {"path": "a.md"}, **turn},
            {"tool": "read_file", "args": {"path": "b.md"}, **turn},
            {"text": json.dumps(FINAL), **turn},
        ],
    )


def _config(tmp_path: Path) -> HivebusConfig:
    config = write_config(
        tmp_path,
        {
            "research": {
                "system": "You research.",
                "model": _script(tmp_path, "default.yaml", 0.0),
                "allow_models": ["scripted:*"],
                "tools": ["hivebus.agent.tools.workspace:read_file"],
                "tiers": ["read"],
                "concurrency": RUNS,
                "limits": {"max_tokens": 8000, "max_steps": 20},
            }
        },
    )
    workspace = config.workspace_dir()
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "a.md").write_text("Bees visit flowers.", encoding="utf-8")
    (workspace / "b.md").write_text("Honey is stored nectar.", encoding="utf-8")
    return config


def _plan(tmp_path: Path, task_id: str, delays: tuple[float, ...]) -> dict[str, object]:
    subtasks = [
        {
            "id": f"part-{i}",
            "role": "research",
            "prompt": f"Research part {i}.",
            # a plan names scripts relative to the configuration's folder (tmp_path)
            "model": "scripted:" + Path(_script(tmp_path, f"part-{i}.yaml", delay_s)).name,
            "output_schema": SCHEMA,
        }
        for i, delay_s in enumerate(delays, start=1)
    ]
    return {
        "task_id": task_id,
        "goal": "research bees in parallel",
        "budget": {"max_tokens": BUDGET, "max_cost_usd": 1.0},
        "plan": {"subtasks": subtasks},
    }


async def _ledger(client: HiveClient, task_id: str) -> LedgerState:
    js = await jetstream(client.broker)
    kv = await js.key_value(subjects.TASKS_BUCKET)
    entry = await kv.get(f"{task_id}.{subjects.LEDGER_KEY_SUFFIX}")
    assert entry.value is not None
    return LedgerState.model_validate_json(entry.value)


async def _stored_count(client: HiveClient, subject: str) -> int:
    js = await jetstream(client.broker)
    info = await js.stream_info(subjects.EVENTS_STREAM, subjects_filter=subject)
    return (info.state.subjects or {}).get(subject, 0)


def _last_text(steps: list[StepRecorded]) -> str | None:
    texts = [
        s.output["text"]
        for s in steps
        if s.step_kind == "model" and isinstance(s.output, dict) and s.output.get("text")
    ]
    return texts[-1] if texts else None


@pytest.mark.parametrize("round_no", range(len(DELAYS)))
async def test_parallel_runs_never_overspend_the_task_budget(
    tmp_path: Path, settings: Settings, round_no: int
) -> None:
    """Three interleaved runs spend at most the task budget, all of it accounted, warned once."""
    task_id = f"shared-{round_no}"
    config = _config(tmp_path)
    events: list[tuple[str, BaseModel]] = []
    async with LocalStack(settings, config) as stack, HiveClient(stack.url, settings) as client:
        await client.submit(_plan(tmp_path, task_id, DELAYS[round_no]))
        async with asyncio.timeout(30):
            async for kind, event in client.follow(task_id):
                events.append((kind, event))
        ledger = await _ledger(client, task_id)
        warnings_stored = await _stored_count(
            client, subjects.event(task_id, EventKind.BUDGET_WARNING)
        )

    result = events[-1][1]
    assert isinstance(result, TaskFinished)
    assert ledger.max_tokens == BUDGET
    assert ledger.used_tokens <= ledger.max_tokens
    assert ledger.reserved_tokens == 0
    assert ledger.reserved_cost_usd == 0
    assert sum(s.usage.tokens for s in result.subtasks) == ledger.used_tokens
    assert result.usage.tokens == ledger.used_tokens
    # Demand (12 turns) exceeds the budget (9): the ledger hands out all of it, no more.
    assert ledger.used_tokens == BUDGET

    short = [s for s in result.subtasks if s.status != SubTaskStatus.COMPLETED]
    assert short, "the budget covers only 9 of 12 turns: some run must have been stopped"
    steps = [e for _, e in events if isinstance(e, StepRecorded)]
    for sub in short:
        assert sub.status == SubTaskStatus.BUDGET_EXCEEDED, sub.reason
        assert "task budget max_tokens reached" in sub.reason
        # Partial output: the run's last answer. The other two runs can take at most 8 of the
        # 9 turns, so every run got at least its first turn, the draft.
        assert sub.output == _last_text([s for s in steps if s.subtask_id == sub.id])
        assert sub.output == DRAFT
    for sub in result.subtasks:
        if sub.status == SubTaskStatus.COMPLETED:
            assert sub.output == FINAL
            assert sub.usage.tokens == TURNS_PER_RUN * TURN_TOKENS
    expected = TaskStatus.PARTIAL if len(short) < RUNS else TaskStatus.BUDGET_EXCEEDED
    assert result.status == expected

    warnings = [e for _, e in events if isinstance(e, BudgetWarning)]
    assert len(warnings) == 1
    assert warnings_stored == 1
    assert 0.8 * BUDGET <= warnings[0].used_tokens <= BUDGET
