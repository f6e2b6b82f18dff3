"""How fast `hivebus stats` is on a stream of 100,000 recorded events.

Starts its own nats-server (`sync_interval: always`, as the services run it), creates the
streams as the services do, and publishes recorded events where hivebus publishes them
(`subjects.address`): tasks of three sub-tasks, each started, a few model and tool steps (with
previews of what went in and came out), finished; about one in ten fails, one in twenty hits a
limit, one in twenty asks for an approval and resumes, a few tool calls fail, a few task events
(`task_finished`, `note_committed`) the scorecard skips, and dead letters on DLQ. The `ts` of the
events spread over the last eight days, so `--since 24h --compare 7d` reads all of them.

Then it times, end to end: (1) in process, reading the streams and computing the scorecard
(`collect` + `scorecard` + the JSON); (2) the command as a user runs it,
`hivebus stats --json --since 24h --compare 7d` in a fresh process (interpreter start
included). Not part of the test suite.

Usage: .venv/bin/python benchmarks/stats.py [--events N]
Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats

from hivebus.console.stats import By, Window, scorecard, scorecard_json
from hivebus.console.stats_reader import LOOKBACK, collect
from hivebus.contracts import (
    ApprovalKind,
    ApprovalRequested,
    DeadLetter,
    Decision,
    Limits,
    StepRecorded,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskStatus,
    TaskFinished,
    TaskStatus,
    Usage,
    subjects,
)
from hivebus.contracts.base import Event
from hivebus.core import EmbeddedNats, Settings, configure_logging
from hivebus.core.topology import ensure_streams

ROOT = Path(__file__).resolve().parent.parent
HIVEBUS = ROOT / ".venv" / "bin" / "hivebus"
ROLES = {"researcher": "research", "invoicer": "invoice", "reviewer": "review"}
MODELS = ("anthropic:claude-sonnet-4-5", "anthropic:claude-haiku-4-5")
IN_FLIGHT = 2000
"""Publishes awaiting their acknowledgement at once."""
TOOL_ERRORS = 0.08
"""Share of tool steps that fail."""
HAIKU = 0.3
"""Share of sub-tasks answered by the second model."""
ESCALATIONS = 0.05
"""Share of sub-tasks that ask for an approval."""
LIMITS = 0.05
"""Share of sub-tasks that end at a limit (`budget_exceeded`, `max_steps`)."""
FAILURES = 0.10
"""Share of sub-tasks that fail otherwise."""
DEAD_LETTERS = 0.03
"""Share of tasks with a dead-lettered assignment."""


def log(text: str) -> None:
    """Progress on stderr."""
    print(text, file=sys.stderr, flush=True)


def _steps(rng: random.Random, task: str, sub: str, at: datetime, n: int) -> Iterator[Event]:
    for step in range(1, n + 1):
        tool = step % 2 == 0
        yield StepRecorded(
            task_id=task,
            subtask_id=sub,
            attempt=1,
            run_id="run-1",
            step=step,
            step_kind="tool" if tool else "model",
            name="http_get" if tool else MODELS[0],
            input={"url": f"https://example.com/{step}"}
            if tool
            else [{"role": "user", "content": "Summarise the findings so far. " * 12}],
            output="<html>" + "x" * 200 if tool else "The findings are as follows. " * 10,
            error="timeout after 10s" if tool and rng.random() < TOOL_ERRORS else None,
            usage=Usage(input_tokens=0 if tool else 900, output_tokens=0 if tool else 120),
            ts=at + timedelta(seconds=step * 3),
        )


def _subtask(rng: random.Random, task: str, sub: str, role: str, at: datetime) -> list[Event]:
    steps = rng.randint(2, 9)
    model = MODELS[rng.random() < HAIKU]
    events: list[Event] = [
        SubTaskStarted(
            task_id=task, subtask_id=sub, attempt=1, run_id="run-1", role=role, model=model, ts=at
        ),
        *_steps(rng, task, sub, at, steps),
    ]
    if rng.random() < ESCALATIONS:
        events.append(
            ApprovalRequested(
                task_id=task,
                approval_id=f"ap-{task}-{sub}",
                subtask_id=sub,
                attempt=1,
                run_id="run-1",
                role=role,
                step=steps,
                call_id="c1",
                approval_kind=ApprovalKind.TOOL_CALL,
                tool="send_email",
                allowed_decisions=[Decision.APPROVE, Decision.REJECT],
                expires_at=at + timedelta(hours=1),
                ts=at + timedelta(seconds=steps * 3),
            )
        )
    roll = rng.random()
    status = SubTaskStatus.COMPLETED
    limit = None
    if roll < LIMITS:
        status, limit = SubTaskStatus.BUDGET_EXCEEDED, "max_steps"
    elif roll < LIMITS + FAILURES:
        status = SubTaskStatus.FAILED
    events.append(
        SubTaskFinished(
            task_id=task,
            subtask_id=sub,
            attempt=1,
            run_id="run-1",
            role=role,
            status=status,
            reason="done" if status is SubTaskStatus.COMPLETED else "it went wrong",
            output={"summary": "A result. " * 20},
            usage=Usage(input_tokens=900 * steps, output_tokens=120 * steps, steps=steps),
            limit=limit,
            subtask_kind=ROLES[role],
            model=model,
            ts=at + timedelta(seconds=steps * 3 + 2),
        )
    )
    return events


def recorded(count: int, now: datetime, seed: int = 7) -> list[Event]:
    """About `count` events of tasks spread over the last eight days (exactly `count`)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible benchmark data, not security
    events: list[Event] = []
    n = 0
    while len(events) < count:
        task = f"t-{n:06d}"
        at = now - timedelta(seconds=rng.uniform(60, 8 * 86400))
        for sub, role in zip(("research", "invoice", "review"), ROLES, strict=True):
            events += _subtask(rng, task, sub, role, at)
        if rng.random() < DEAD_LETTERS:
            lost = SubTaskAssigned(
                task_id=task,
                subtask_id="invoice",
                role="invoicer",
                goal="g",
                prompt="p",
                limits=Limits(),
                subtask_kind="invoice",
            )
            events.append(
                DeadLetter(
                    task_id=task,
                    subtask_id="invoice",
                    why="max_deliveries",
                    original=lost.model_dump(mode="json"),
                    ts=at,
                )
            )
        events.append(
            TaskFinished(
                task_id=task,
                status=TaskStatus.COMPLETED,
                reason="ok",
                usage=Usage(),
                subtasks=[],
                ts=at + timedelta(minutes=1),
            )
        )
        n += 1
    return events[:count]


async def publish(url: str, events: list[Event]) -> float:
    """Publish every event where hivebus would; return the seconds it took."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    started = time.perf_counter()
    pending: list[asyncio.Future[Any]] = []
    for event in events:
        where = subjects.address(event)
        pending.append(
            await js.publish_async(
                where.subject,
                event.model_dump_json().encode(),
                stream=where.stream,
                headers={subjects.MSG_ID_HEADER: where.msg_id},
            )
        )
        if len(pending) >= IN_FLIGHT:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    seconds = time.perf_counter() - started
    await nc.close()
    return seconds


async def main(count: int) -> dict[str, Any]:
    """Publish `count` events to a fresh server and time `hivebus stats` on them."""
    configure_logging("console", "warning")
    async with EmbeddedNats() as server:
        settings = Settings(nats_url=server.url)
        nc = await nats.connect(server.url)
        await ensure_streams(nc.jetstream(), settings, 1)
        await nc.close()
        now = datetime.now(UTC)
        events = recorded(count, now)
        log(f"publishing {len(events)} events")
        published_s = await publish(server.url, events)
        size = sum(len(e.model_dump_json()) for e in events[:1000]) / 1000
        log(f"published in {published_s:.1f}s; timing stats in process")
        started = time.perf_counter()
        now = datetime.now(UTC)
        window = Window(now - timedelta(days=1), now)
        baseline = Window(window.start - timedelta(days=7), window.start)
        tally = await collect(server.url, baseline.start - LOOKBACK, settings)
        card = scorecard(tally, By.ROLE, window, baseline)
        json.dumps(scorecard_json(card))
        in_process_s = time.perf_counter() - started
        log("timing the command (a fresh process)")
        env = {**os.environ, "HIVEBUS_NATS_URL": server.url}
        started = time.perf_counter()
        done = await asyncio.to_thread(
            subprocess.run,
            [str(HIVEBUS), "stats", "--json", "--since", "24h", "--compare", "7d"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        command_s = time.perf_counter() - started
        out = json.loads(done.stdout)
    return {
        "events": tally.events,
        "mean_event_bytes": round(size),
        "seconds": round(in_process_s, 3),
        "events_per_s": round(tally.events / in_process_s),
        "command_seconds": round(command_s, 3),
        "command_events": out["events"],
        "rows": {row["key"]: row["subtasks"] for row in out["rows"]},
        "publish_seconds": round(published_s, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.events)), indent=2))
