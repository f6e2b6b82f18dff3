"""Checkpoints and resume: a run continued from its checkpoint repeats no completed step."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from hivebus.agent.checkpoint import CheckpointUnavailableError
from hivebus.agent.loop import AgentLoop, RunContext, new_run
from hivebus.agent.modelcall import ModelCaller
from hivebus.agent.models.scripted import ScriptedModel, parse_script
from hivebus.agent.tool import Tool, ToolContext, tool
from hivebus.agent.toolbox import Toolbox
from hivebus.agent.toolstep import ToolRunner
from hivebus.contracts import Limits, SubTaskAssigned, SubTaskStatus, Tier
from hivebus.contracts.runs import RunCheckpoint, RunPhase
from hivebus.core import Price
from hivebus.core.reliability import BreakerPolicy, BreakerRegistry, RetryPolicy

from .fakes import CollectingSink, FakeClock

CALLS: list[str] = []


@tool(tier="read")
def note(text: str, context: ToolContext) -> str:
    """Remember a short note."""
    CALLS.append(f"{text}@{context.idempotency_key}")
    return f"noted {text}"


class Crash(CheckpointUnavailableError):  # noqa: N818 - a simulated process death
    """Raised by the checkpoint hook to stop the run as a SIGKILL would: it escapes `run()`."""


SCRIPT: list[dict[str, Any]] = [
    {"tool": "note", "args": {"text": "a"}},
    {"tool": "note", "args": {"text": "b"}},
    {"text": "done"},
]


def _assignment() -> SubTaskAssigned:
    return SubTaskAssigned(
        task_id="t",
        subtask_id="s",
        role="writer",
        goal="g",
        prompt="p",
        limits=Limits(max_steps=20, max_tool_calls=10),
    )


def _fresh() -> RunCheckpoint:
    return new_run(_assignment(), "run-1")


def _context(
    workspace: Path,
    saved: list[RunCheckpoint],
    crash_at: int | None,
    *,
    script: list[dict[str, Any]] = SCRIPT,
    tools: Sequence[Tool] = (note,),
    clock: FakeClock | None = None,
) -> RunContext:
    clock = clock or FakeClock()
    breakers = BreakerRegistry(BreakerPolicy(), clock)
    no_retry = RetryPolicy(attempts=1)

    async def checkpoint(state: RunCheckpoint) -> None:
        saved.append(state.model_copy(deep=True))
        if crash_at is not None and len(saved) == crash_at:
            raise Crash

    return RunContext(
        system="s",
        caller=ModelCaller(
            [ScriptedModel("scripted:t", parse_script(script, "t"))],
            breakers=breakers,
            retry=no_retry,
            price_for=lambda _: Price(input_per_mtok=0, output_per_mtok=0),
        ),
        tools=ToolRunner(Toolbox(tools, [Tier.READ]), breakers=breakers, retry=no_retry),
        workspace=workspace,
        clock=clock,
        events=CollectingSink(),
        checkpoint=checkpoint,
    )


async def test_every_step_is_checkpointed(tmp_path: Path) -> None:
    """A run writes a checkpoint after each model step and each turn of tool calls."""
    CALLS.clear()
    saved: list[RunCheckpoint] = []
    outcome = await AgentLoop(_assignment(), _context(tmp_path, saved, None), _fresh()).run()
    assert outcome.status == SubTaskStatus.COMPLETED
    assert [s.usage.steps for s in saved] == [1, 2, 3, 4]
    assert saved[0].pending_calls  # the model asked for a tool: the checkpoint says so
    assert [s.phase for s in saved] == [RunPhase.TOOLS, RunPhase.MODEL] * 2


async def test_resume_after_a_crash_repeats_no_completed_step(tmp_path: Path) -> None:
    """Crashing after any checkpoint and resuming from it runs each tool call exactly once."""
    for crash_at in (1, 2, 3):
        CALLS.clear()
        saved: list[RunCheckpoint] = []
        first = AgentLoop(_assignment(), _context(tmp_path, saved, crash_at), _fresh())
        with pytest.raises(Crash):
            await first.run()
        resumed_from = saved[-1]
        outcome = await AgentLoop(_assignment(), _context(tmp_path, [], None), resumed_from).run()
        assert outcome.status == SubTaskStatus.COMPLETED, crash_at
        assert outcome.output == "done"
        assert [c.split("@")[0] for c in CALLS] == ["a", "b"], crash_at
        assert len(set(CALLS)) == 2  # idempotency keys stable: run id kept across the resume
        assert all(
            c.endswith(tuple(f":{n}:call_{m}" for n in (2, 4) for m in (1, 2))) for c in CALLS
        )
        assert outcome.usage.steps == 5


async def test_a_cancelled_task_stops_at_the_next_step_boundary(tmp_path: Path) -> None:
    """When the cancel flag is up the run ends `cancelled` before its next step."""
    CALLS.clear()
    ctx = _context(tmp_path, [], None)
    asked = 0

    async def cancelled() -> bool:
        nonlocal asked
        asked += 1
        return asked > 2

    ctx.cancelled = cancelled
    outcome = await AgentLoop(_assignment(), ctx, _fresh()).run()
    assert outcome.status == SubTaskStatus.CANCELLED
    assert outcome.usage.steps < 5


async def test_a_resumed_run_counts_the_wall_time_before_its_crash_once(tmp_path: Path) -> None:
    """Wall time used before a crash comes back from the checkpoint and is counted only once."""
    clock = FakeClock()

    @tool(tier="read")
    def work(seconds: float) -> str:
        """Work for the given number of seconds."""
        clock.advance(seconds)
        return "worked"

    script = [
        {"tool": "work", "args": {"seconds": 3}},
        {"tool": "work", "args": {"seconds": 4}},
        {"text": "done"},
    ]
    saved: list[RunCheckpoint] = []
    first = _context(tmp_path, saved, 2, script=script, tools=[work], clock=clock)
    with pytest.raises(Crash):
        await AgentLoop(_assignment(), first, _fresh()).run()
    assert saved[-1].wall_s == 3.0

    clock.advance(100)  # the redelivery comes later: time between workers is not the run's
    resumed: list[RunCheckpoint] = []
    again = _context(tmp_path, resumed, None, script=script, tools=[work], clock=clock)
    outcome = await AgentLoop(_assignment(), again, saved[-1]).run()
    assert outcome.status == SubTaskStatus.COMPLETED
    assert outcome.usage.wall_s == 7.0
    assert [state.wall_s for state in resumed] == [3.0, 7.0]
