"""Every plan in examples/failures/ ends as documented, on one real nats-server and stack.

The table `EXPECTED` holds the documented outcome of each plan: task status, first sub-task
status, and a check of the evidence (a reason, a tool error kind, a breaker event).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hivetest import HIVEBUS, REPO, process_env
from pydantic import BaseModel

from hivebus.console.client import HiveClient, load_plan_file
from hivebus.console.render import EXIT_CODES
from hivebus.console.stack import LocalStack
from hivebus.contracts import (
    BreakerChanged,
    BudgetWarning,
    StepRecorded,
    SubTaskStatus,
    SubTaskSummary,
    TaskFinished,
    TaskStatus,
)
from hivebus.core import EmbeddedNats, Settings, load_config

pytestmark = pytest.mark.e2e

EXAMPLES = REPO / "examples" / "failures"
CONFIG_FILE = EXAMPLES / "hivebus.yaml"


@dataclass
class Run:
    """Everything one plan published, up to and including its `TaskFinished`."""

    events: list[tuple[str, BaseModel]]

    @property
    def result(self) -> TaskFinished:
        """The task's last event."""
        last = self.events[-1][1]
        assert isinstance(last, TaskFinished), last
        return last

    @property
    def first(self) -> SubTaskSummary:
        """The summary of the plan's first sub-task."""
        return self.result.subtasks[0]

    def steps(self, kind: str | None = None, name: str | None = None) -> list[StepRecorded]:
        """Step events, optionally only of one kind (`model`/`tool`) or one name."""
        return [
            e
            for _, e in self.events
            if isinstance(e, StepRecorded)
            and (kind is None or e.step_kind == kind)
            and (name is None or e.name == name)
        ]

    def tool_error_kinds(self) -> list[str]:
        """The error kind of every failed tool result, in step order."""
        return [
            s.output["error"]["kind"]
            for s in self.steps("tool")
            if isinstance(s.output, dict) and s.output.get("error")
        ]

    def breakers(self) -> list[tuple[str, str, str]]:
        """Every breaker change as (breaker, old, new)."""
        return [(e.breaker, e.old, e.new) for _, e in self.events if isinstance(e, BreakerChanged)]


@dataclass(frozen=True)
class Expected:
    """The documented outcome of one plan."""

    task: TaskStatus | None
    """None: it varies with the interleaving of parallel runs; `evidence` checks it."""
    subtask: SubTaskStatus | None
    """Likewise, for the plan's first sub-task."""
    evidence: Callable[[Run], None]


# -- evidence, one function per plan ------------------------------------------------------


def _malformed_args(run: Run) -> None:
    first, second = run.steps("tool")
    assert first.output["error"]["kind"] == "invalid_arguments"
    assert second.output["ok"] is True  # the model corrected its call


def _tool_timeout(run: Run) -> None:
    first, second, third = run.steps("tool", "slow_lookup")
    assert [s.output["error"]["kind"] for s in (first, second)] == ["timeout", "timeout"]
    assert ("tool:slow_lookup", "closed", "open") in run.breakers()
    assert "switched off" in third.output["error"]["message"]


def _tool_raises(run: Run) -> None:
    failed = [s for s in run.steps("tool") if s.error]
    assert failed[0].output["error"]["kind"] == "permanent"
    assert "archive index corrupted" in failed[0].output["error"]["message"]


def _unknown_tool(run: Run) -> None:
    assert "unknown_tool" in run.tool_error_kinds()


def _step_limit(run: Run) -> None:
    assert "max_steps reached (6 of 6)" in run.first.reason


def _token_limit(run: Run) -> None:
    assert "max_tokens reached (2000 of 4000; the next call could need 2900)" in run.first.reason
    assert run.first.usage.tokens <= 4000


def _wall_clock(run: Run) -> None:
    assert "max_wall_s reached" in run.first.reason


def _tool_call_limit(run: Run) -> None:
    assert "max_tool_calls reached (2 of 2)" in run.first.reason
    assert str(run.first.output).startswith("From two lookups")


def _repeated_call(run: Run) -> None:
    assert "lookup called 3 times in a row with the same arguments" in run.first.reason
    assert len(run.steps("tool")) == 2  # the third identical call is not run


def _rate_limited(run: Run) -> None:
    assert run.result.usage.retries == 1
    assert run.first.usage.retries == 1
    (retry,) = run.steps("model")[0].retries
    assert retry.delay_s >= 0.5  # the scripted 429's retry-after


def _fallback(run: Run) -> None:
    assert ("model:scripted:scripts/broken.yaml", "closed", "open") in run.breakers()
    notes = [" | ".join(step.notes) for step in run.steps("model")]
    failed = [i for i, n in enumerate(notes) if "broken.yaml failed" in n]
    assert len(failed) == 2, notes  # two failed steps open the breaker (threshold 2)...
    assert any("skipped" in n for n in notes[failed[-1] + 1 :]), notes  # ...then it is skipped
    assert run.first.output.startswith("The backup model answered")


def _output_corrected(run: Run) -> None:
    assert run.first.output == {"topic": "bees", "flowers_per_pound": 2_000_000}


def _output_invalid(run: Run) -> None:
    assert run.first.reason.startswith("invalid_output")
    assert "(after 2 corrections)" in run.first.reason
    assert run.first.output == '{"topic": "bees"}'  # the last attempt, attached


def _denied_tier(run: Run) -> None:
    assert "denied" in run.tool_error_kinds()


def _shared_budget(run: Run) -> None:
    # Which runs finish depends on how the three interleave: one may complete (partial) or none.
    assert run.result.status in {TaskStatus.PARTIAL, TaskStatus.BUDGET_EXCEEDED}
    subtasks = run.result.subtasks
    assert len(subtasks) == 3
    assert sum(s.usage.tokens for s in subtasks) <= 10_000
    assert any(
        s.status == SubTaskStatus.BUDGET_EXCEEDED and "task budget" in s.reason for s in subtasks
    ), [(s.status, s.reason) for s in subtasks]
    assert sum(isinstance(e, BudgetWarning) for _, e in run.events) == 1


def _hallucinated_phone(run: Run) -> None:
    output = str(run.first.output)
    assert "0199" not in output
    assert "555 0100" in output
    assert "[unverified contact removed]" in output
    assert any("0199" in flag for flag in run.first.flags), run.first.flags


_C, _B, _F = TaskStatus.COMPLETED, TaskStatus.BUDGET_EXCEEDED, TaskStatus.FAILED
_SC, _SB = SubTaskStatus.COMPLETED, SubTaskStatus.BUDGET_EXCEEDED

EXPECTED: dict[str, Expected] = {
    "malformed-args": Expected(_C, _SC, _malformed_args),
    "tool-timeout": Expected(_C, _SC, _tool_timeout),
    "tool-raises": Expected(_C, _SC, _tool_raises),
    "unknown-tool": Expected(_C, _SC, _unknown_tool),
    "step-limit": Expected(_B, _SB, _step_limit),
    "token-limit": Expected(_B, _SB, _token_limit),
    "wall-clock": Expected(_B, _SB, _wall_clock),
    "tool-call-limit": Expected(_B, _SB, _tool_call_limit),
    "repeated-call": Expected(_F, SubTaskStatus.LOOP_DETECTED, _repeated_call),
    "rate-limited": Expected(_C, _SC, _rate_limited),
    "fallback": Expected(_C, _SC, _fallback),
    "output-corrected": Expected(_C, _SC, _output_corrected),
    "output-invalid": Expected(_F, SubTaskStatus.FAILED, _output_invalid),
    "denied-tier": Expected(_C, _SC, _denied_tier),
    "shared-budget": Expected(None, None, _shared_budget),
    "hallucinated-phone": Expected(_C, _SC, _hallucinated_phone),
}


def _plan_names() -> list[str]:
    return sorted(p.stem for p in EXAMPLES.glob("*.yaml") if p.name != CONFIG_FILE.name)


@pytest.fixture(scope="module")
async def hive(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[HiveClient]:
    """One server and one stack (orchestrator + both roles) for every plan of this module."""
    tmp = tmp_path_factory.mktemp("failures")
    server = EmbeddedNats(tmp / "nats")
    await server.start()
    settings = Settings(
        nats_url=server.url, orchestrator_ack_wait_s=2.0, work_ack_wait_s=5.0, heartbeat_s=1.0
    )
    config = load_config(CONFIG_FILE).model_copy(update={"workspace": tmp / "workspace"})
    try:
        async with LocalStack(settings, config) as stack, HiveClient(stack.url, settings) as hc:
            yield hc
    finally:
        await server.stop()


async def _run(client: HiveClient, name: str) -> Run:
    body = load_plan_file(EXAMPLES / f"{name}.yaml", task_id=f"example-{name}")
    await client.submit(body)
    events: list[tuple[str, BaseModel]] = []
    async with asyncio.timeout(30):
        async for kind, event in client.follow(body["task_id"]):
            events.append((kind, event))
    return Run(events)


def test_every_example_plan_has_an_expectation() -> None:
    """Each plan in examples/failures/ has a documented outcome here, and each outcome a plan."""
    assert _plan_names() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_example_ends_as_documented(hive: HiveClient, name: str) -> None:
    """The plan's task and first sub-task end in the documented statuses, with the evidence."""
    expected = EXPECTED[name]
    run = await _run(hive, name)
    result = run.result
    if expected.task is not None:
        assert result.status == expected.task, result.reason
    if expected.subtask is not None:
        assert run.first.status == expected.subtask, run.first.reason
    expected.evidence(run)


@pytest.mark.parametrize(
    ("plan", "exit_code", "status", "reason"),
    [
        ("step-limit", 6, "budget_exceeded", "max_steps reached (6 of 6)"),
        ("fallback", 0, "completed", "final answer given"),
    ],
)
def test_cli_run_exits_with_the_status_code(
    plan: str, exit_code: int, status: str, reason: str
) -> None:
    """`hivebus run <example> --json` exits with its status's code; stdout ends with the result."""
    done = subprocess.run(
        [
            str(HIVEBUS),
            "run",
            f"examples/failures/{plan}.yaml",
            "--config",
            "examples/failures/hivebus.yaml",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=process_env(),
        check=False,
    )
    assert done.returncode == exit_code == EXIT_CODES[TaskStatus(status)], done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["kind"] == "task_finished"
    assert result["status"] == status
    (subtask,) = result["subtasks"]
    assert subtask["status"] == status
    assert reason in subtask["reason"]
