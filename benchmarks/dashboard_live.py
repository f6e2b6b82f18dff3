"""How soon the dashboard's live stream shows an event, beside nats-py reading the same events.

Starts its own nats-server and the services in this process (`LocalStack`), a dashboard on a
free port, then submits one task of independent sub-tasks (each a tool step and an answer).
While the task runs it reads the task's events two ways at once: the dashboard's Server-Sent
Events stream (`/api/tasks/<id>/stream`, as the page does) and a raw nats-py ordered consumer
on the same subjects. For each event stored after both were reading, the delay is its arrival
minus the time JetStream stored it. Not part of the test suite.

Usage: .venv/bin/python benchmarks/dashboard_live.py [--subtasks N]
Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import yaml
from nats.js.api import DeliverPolicy

from hivebus.console.client import HiveClient
from hivebus.console.dashboard.server import DashboardServer
from hivebus.console.stack import LocalStack
from hivebus.contracts import subjects
from hivebus.core import EmbeddedNats, Settings, configure_logging, load_config

TASK = "live-bench"


def log(text: str) -> None:
    """Progress on stderr."""
    print(text, file=sys.stderr, flush=True)


def summary(delays_ms: list[float]) -> dict[str, float]:
    """p50, p99 and max of the delays, in ms."""
    ordered = sorted(delays_ms)
    if not ordered:
        return {"n": 0}
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max_ms": round(ordered[-1], 2),
    }


def write_config(directory: Path) -> Path:
    """One role whose runs list the workspace, then answer, each turn a little later."""
    turns = [{"tool": "list_files", "args": {}, "delay_s": 0.05}, {"text": "done", "delay_s": 0.05}]
    (directory / "worker.yaml").write_text(yaml.safe_dump(turns))
    config = {
        "workspace": "workspace",
        "roles": {
            "worker": {
                "system": "s",
                "model": "scripted:worker.yaml",
                "tools": ["hivebus.agent.tools.workspace:list_files"],
                "concurrency": 8,
                "validators": [],
            }
        },
    }
    path = directory / "hivebus.yaml"
    path.write_text(yaml.safe_dump(config))
    (directory / "workspace").mkdir()
    return path


async def read_sse(
    http: httpx.AsyncClient, opened: asyncio.Event, seen: list[tuple[float, str]]
) -> None:
    """Every SSE event of the task: (arrival, the time EVENTS stored it)."""
    async with http.stream("GET", f"/api/tasks/{TASK}/stream") as response:
        opened.set()
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line == "" and "data" in fields:
                row = json.loads(fields["data"])
                seen.append((time.time(), row["time"]))
                fields = {}
                if row["kind"] == "task_finished":
                    return
            elif ":" in line and not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.strip()


async def main() -> None:
    """Run the task, read it both ways, print the delays."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subtasks", type=int, default=40, help="independent sub-tasks")
    args = parser.parse_args()
    configure_logging("console", "warning")
    with tempfile.TemporaryDirectory(prefix="hivebus-live-") as tmp:
        work = Path(tmp)
        config = load_config(write_config(work))
        async with EmbeddedNats(work / "nats") as server:
            settings = Settings(nats_url=server.url, knowledge_dir=work / "knowledge")
            async with (
                LocalStack(settings, config) as stack,
                DashboardServer(settings, stack.url, port=0) as board,
                HiveClient(stack.url, settings) as client,
                httpx.AsyncClient(base_url=board.url, timeout=60) as http,
            ):
                await board.wait_ready(30)
                nc = await nats.connect(stack.url)
                raw: list[tuple[float, datetime]] = []
                done = asyncio.Event()

                async def on_raw(msg: Any) -> None:
                    raw.append((time.time(), msg.metadata.timestamp))
                    if msg.subject.endswith(".task_finished"):
                        done.set()

                await nc.jetstream().subscribe(
                    subjects.events_of(TASK),
                    cb=on_raw,
                    ordered_consumer=True,
                    deliver_policy=DeliverPolicy.ALL,
                )
                subtasks = [
                    {"id": f"s{i}", "role": "worker", "prompt": f"do {i}"}
                    for i in range(args.subtasks)
                ]
                body = {"task_id": TASK, "goal": "measure", "plan": {"subtasks": subtasks}}
                await client.submit(body)
                async with asyncio.timeout(30):  # the index learns of the task from the bus
                    while (await http.get(f"/api/tasks/{TASK}")).status_code != httpx.codes.OK:  # noqa: ASYNC110 - no event to await
                        await asyncio.sleep(0.01)
                opened = asyncio.Event()
                seen: list[tuple[float, str]] = []
                reader = asyncio.create_task(read_sse(http, opened, seen))
                await opened.wait()
                since = time.time() + 0.2  # what was stored before the stream opened is history
                await asyncio.wait_for(asyncio.gather(reader, done.wait()), 120)
                await nc.close()
    sse_ms = [
        (arrival - datetime.fromisoformat(stored).timestamp()) * 1000
        for arrival, stored in seen
        if datetime.fromisoformat(stored).timestamp() >= since
    ]
    raw_ms = [
        (arrival - stored.timestamp()) * 1000
        for arrival, stored in raw
        if stored.timestamp() >= since
    ]
    dashboard, floor = summary(sse_ms), summary(raw_ms)
    log(f"dashboard SSE: {dashboard}; raw nats-py: {floor}")
    ratios = {
        key: round(dashboard[key] / floor[key], 2)
        for key in ("p50_ms", "p99_ms")
        if key in dashboard and floor.get(key)
    }
    print(
        json.dumps(
            {
                "subtasks": args.subtasks,
                "dashboard_sse": dashboard,
                "raw_nats": floor,
                "ratios": ratios,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
