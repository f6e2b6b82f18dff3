"""Checkpoints and resume: a run continued from its checkpoint repeats no completed step."""

from __future__ import annotations

from pathlib import Path

import pytest

from hivebus.agent.checkpoint import CheckpointUnavailableError, RunState
from hivebus.agent.loop import AgentLoop, RunContext
from hivebus.agent.modelcall import ModelCaller
from hivebus.agent.models.scripted import ScriptedModel, parse_script
from hivebus.agent.tool import ToolContext, tool
from hivebus.agent.toolbox import Toolbox
from hivebus.agent.toolstep import ToolRunner
from hivebus.contracts import Limits, SubTaskAssigned, SubTaskStatus, Tier
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


SCRIPT = [
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


def _context(workspace: Path, saved: list[RunState], crash_at: int | None) -> RunContext:
    clock = FakeClock()
    breakers = BreakerRegistry(BreakerPolicy(), clock)
    no_retry = RetryPolicy(attempts=1)

    async def checkpoint(state: RunState) -> None:
        saved.append(state.model_copy(deep=True))
        if crash_at is not None and len(saved) == crash_at:
            raise Crash

    return RunContext(
        system="s",
        caller=ModelCaller(
            [ScriptedModel("scripted:t", parse_script(SCRIPT, "t"))],
            breakers=breakers,
            retry=no_retry,
            price_for=lambda _: Price(input_per_mtok=0, output_per_mtok=0),
        ),
        tools=ToolRunner(Toolbox([note], [Tier.READ]), breakers=breakers, retry=no_retry),
        workspace=workspace,
        clock=clock,
        events=CollectingSink(),
        run_id="run-1",
        checkpoint=checkpoint,
    )


async def test_every_step_is_checkpointed(tmp_path: Path) -> None:
    """A run writes a checkpoint after each model step and each turn of tool calls."""
    CALLS.clear()
    saved: list[RunState] = []
    outcome = await AgentLoop(_assignment(), _context(tmp_path, saved, None)).run()
    assert outcome.status == SubTaskStatus.COMPLETED
    assert [s.usage.steps for s in saved] == [1, 2, 3, 4]
    assert saved[0].pending_calls  # the model asked for a tool: the checkpoint says so


async def test_resume_after_a_crash_repeats_no_completed_step(tmp_path: Path) -> None:
    """Crashing after any checkpoint and resuming from it runs each tool call exactly once."""
    for crash_at in (1, 2, 3):
        CALLS.clear()
        saved: list[RunState] = []
        first = AgentLoop(_assignment(), _context(tmp_path, saved, crash_at))
        with pytest.raises(Crash):
            await first.run()
        resumed_from = saved[-1]
        outcome = await AgentLoop(
            _assignment(), _context(tmp_path, [], None), resume=resumed_from
        ).run()
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
    outcome = await AgentLoop(_assignment(), ctx).run()
    assert outcome.status == SubTaskStatus.CANCELLED
    assert outcome.usage.steps < 5
