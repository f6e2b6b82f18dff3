"""`hivebus stats` as a user runs it, against recorded events on a real nats-server.

The events are published where hivebus publishes them (`subjects.address`: EVENTS, and DLQ
for dead letters) with backdated `ts`: the scorecard's windows are by event time, so last
week's sub-tasks can be planted now.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest
from hivetest import HIVEBUS, REPO, process_env, provision_bus

from hivebus.contracts import (
    DeadLetter,
    Limits,
    StepRecorded,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskStatus,
    Usage,
    subjects,
)
from hivebus.contracts.base import Event
from hivebus.core import EmbeddedNats, Settings
from hivebus.core.embedded import free_port

pytestmark = pytest.mark.e2e


def _subtask(role: str, n: int, at: datetime, *, done: bool, steps: int) -> list[Event]:
    """One sub-task of `role`: started 30 s before `at`, a tool step (failed unless done)."""
    task, kind = f"t-{role}-{at:%d}-{n}", f"{role}-work"
    return [
        SubTaskStarted(
            task_id=task,
            subtask_id="s",
            attempt=1,
            run_id="r",
            role=role,
            model="m",
            ts=at - timedelta(seconds=30),
        ),
        StepRecorded(
            task_id=task,
            subtask_id="s",
            attempt=1,
            run_id="r",
            step=1,
            step_kind="tool",
            name="http_get",
            error=None if done else "boom",
            ts=at - timedelta(seconds=10),
        ),
        SubTaskFinished(
            task_id=task,
            subtask_id="s",
            attempt=1,
            run_id="r",
            role=role,
            status=SubTaskStatus.COMPLETED if done else SubTaskStatus.FAILED,
            reason="r",
            usage=Usage(input_tokens=100, output_tokens=20, cost_usd=0.002, steps=steps),
            subtask_kind=kind,
            model="anthropic:claude-sonnet",
            ts=at,
        ),
    ]


def recorded(now: datetime) -> list[Event]:
    """Invoicer: 9/10 done in 8 steps three days ago, 5/10 in 14 today; steady: unchanged."""
    earlier, today = now - timedelta(days=3), now - timedelta(hours=2)
    events: list[Event] = []
    for n in range(10):
        events += _subtask("invoicer", n, earlier, done=n < 9, steps=8)
        events += _subtask("invoicer", n, today, done=n < 5, steps=14)
        events += _subtask("steady", n, earlier, done=n < 9, steps=8)
        events += _subtask("steady", n, today, done=n < 9, steps=8)
    lost = SubTaskAssigned(
        task_id="t-lost",
        subtask_id="s",
        role="invoicer",
        goal="g",
        prompt="p",
        limits=Limits(),
        subtask_kind="invoicer-work",
    )
    events.append(
        DeadLetter(
            task_id="t-lost",
            subtask_id="s",
            why="max_deliveries",
            original=lost.model_dump(mode="json"),
            ts=today,
        )
    )
    return events


async def publish(url: str, events: list[Event]) -> None:
    """Publish each event where hivebus would, with its message id."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for event in events:
            where = subjects.address(event)
            await js.publish(
                where.subject,
                event.model_dump_json().encode(),
                stream=where.stream,
                headers={subjects.MSG_ID_HEADER: where.msg_id},
            )
    finally:
        await nc.close()


async def hivebus(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `hivebus <args>` against the server at `url`."""
    return await asyncio.to_thread(
        subprocess.run,
        [str(HIVEBUS), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=process_env(HIVEBUS_NATS_URL=url),
        check=False,
    )


async def test_stats_json_reports_the_recorded_numbers_and_flags_the_regression(
    nats_server: EmbeddedNats, settings: Settings
) -> None:
    """`hivebus stats --json --compare 7d` gives the planted numbers and flags only invoicer."""
    await provision_bus(nats_server.url, settings)
    await publish(nats_server.url, recorded(datetime.now(UTC)))
    done = await hivebus(nats_server.url, "stats", "--json", "--since", "24h", "--compare", "7d")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["events"] == 40 * 3 + 1  # 40 sub-tasks of 3 events each, 1 dead letter
    assert out["dlq"] == 1
    rows: dict[str, Any] = {row["key"]: row for row in out["rows"]}
    assert list(rows) == ["invoicer", "steady"]
    invoicer = rows["invoicer"]
    assert (invoicer["subtasks"], invoicer["completion_rate"]) == (10, 0.5)
    assert (invoicer["steps_mean"], invoicer["steps_p50"], invoicer["steps_p95"]) == (14, 14, 14)
    assert (invoicer["latency_p50_s"], invoicer["latency_p95_s"]) == (30.0, 30.0)
    assert invoicer["tokens_per_subtask"] == 120  # 100 in + 20 out
    assert invoicer["cost_per_subtask_usd"] == 0.002
    assert invoicer["tool_error_rate"] == 0.5  # 5 failed tool steps of 10
    assert (invoicer["limit_exceeded_rate"], invoicer["escalation_rate"]) == (0.0, 0.0)
    assert invoicer["dlq"] == 1
    assert (invoicer["baseline"]["completion_rate"], invoicer["baseline"]["steps_mean"]) == (
        0.9,
        8,
    )
    assert invoicer["flags"] == ["completion_rate", "steps"]
    assert rows["steady"]["flags"] == []
    assert rows["steady"]["completion_rate"] == rows["steady"]["baseline"]["completion_rate"]


async def test_stats_by_kind_and_the_table(nats_server: EmbeddedNats, settings: Settings) -> None:
    """`--by kind` groups by the plan's kind; without `--json` a table is printed, exit 0."""
    await provision_bus(nats_server.url, settings)
    await publish(nats_server.url, recorded(datetime.now(UTC)))
    done = await hivebus(nats_server.url, "stats", "--json", "--by", "kind", "--since", "7d")
    assert done.returncode == 0, done.stderr
    kinds = {row["key"]: row["subtasks"] for row in json.loads(done.stdout)["rows"]}
    assert kinds == {"invoicer-work": 20, "steady-work": 20}
    table = await hivebus(nats_server.url, "stats", "--since", "24h", "--compare", "7d")
    assert table.returncode == 0, table.stderr
    assert "invoicer" in table.stdout
    flagged = next(line for line in table.stdout.splitlines() if "invoicer" in line)
    assert flagged.rstrip().endswith("done steps")  # the flag column, last


async def test_stats_without_streams_is_an_error(nats_server: EmbeddedNats) -> None:
    """A server hivebus never provisioned: exit 1, saying which stream is missing."""
    done = await hivebus(nats_server.url, "stats", "--json")
    assert done.returncode == 1
    assert "no EVENTS stream" in done.stderr


async def test_stats_with_no_server_is_an_error_not_a_hang() -> None:
    """Nothing listening at HIVEBUS_NATS_URL: exit 1 at once, saying what to check."""
    done = await hivebus(f"nats://127.0.0.1:{free_port()}", "stats")
    assert done.returncode == 1
    assert "cannot reach the server" in done.stderr
    assert "Traceback" not in done.stderr
