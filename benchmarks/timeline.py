"""Where a round trip's time goes: every message on the bus during one task, in order.

Starts the same stack as `throughput.py` (its own nats-server with `sync_interval: always`,
the services as separate processes), submits one-sub-task tasks one at a time as its (b)
does, and listens to every subject (`>`) meanwhile: publishes, KV writes, pull requests,
acks and replies. It prints the sequence of the median round trip, each message with its
time since the submission (as this listener saw it, so within a millisecond or so), and how
many messages of each kind a round trip takes. A subject that appears twice in a row is the
publish and then its delivery to the consumer; a `(reply)` is the server's answer to the
request before it. The first lines can be the tail of the task before (its summary note
being committed). The listener costs some CPU, so its round trips are slower than (b)'s.
Not part of the test suite.

Usage: .venv/bin/python benchmarks/timeline.py [--tasks 50]
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import nats

from hivebus.core import EmbeddedNats, configure_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import Finishes, one, start_services, wait_ready, write_config


def label(subject: str, task_id: str) -> str:
    """A message's subject without what varies between tasks (ids, inboxes, ack positions)."""
    if subject.startswith("$JS.ACK."):
        return ".".join(subject.split(".")[:4]) + " (ack)"
    subject = subject.replace(task_id, "<task>")
    subject = re.sub(r"^(_INBOX|[A-Za-z_]*inbox[A-Za-z_]*)\.\S*", r"\1.* (reply)", subject)
    return re.sub(r"[0-9a-f]{32}", "<id>", subject)


class Tap:
    """Every message on the bus, as (monotonic seconds, subject), from a `>` subscription."""

    def __init__(self) -> None:
        """Nothing seen yet."""
        self.seen: list[tuple[float, str]] = []

    async def on_message(self, msg: Any) -> None:
        """Core subscription callback."""
        self.seen.append((time.perf_counter(), msg.subject))


async def main() -> None:
    """Run the tasks, then print the message sequence of the median one."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=50, help="sequential one-sub-task tasks")
    args = parser.parse_args()
    configure_logging("console", "warning")
    tap = Tap()
    windows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="hivebus-timeline-") as tmp:
        work = Path(tmp)
        async with EmbeddedNats(work / "nats") as server:
            nc = await nats.connect(server.url)
            wire = await nats.connect(server.url)
            js = nc.jetstream()
            fleet = start_services(server.url, write_config(work), work / "kn", work / "logs")
            try:
                finishes = Finishes()
                await nc.subscribe("hive.events.*.task_finished", cb=finishes.on_event)
                await wait_ready(js, fleet)
                for warm in range(5):  # first tasks pay for imports and connections
                    future = finishes.expect(f"w{warm}")
                    await js.publish("hive.tasks.submit", one(f"w{warm}"))
                    await asyncio.wait_for(future, 60)
                await wire.subscribe(">", cb=tap.on_message)
                await wire.flush()
                for i in range(args.tasks):
                    task_id = f"t{i}"
                    future = finishes.expect(task_id)
                    start = time.perf_counter()
                    await js.publish("hive.tasks.submit", one(task_id))
                    await asyncio.wait_for(future, 60)
                    windows.append((task_id, start, time.perf_counter()))
                await asyncio.sleep(0.5)
            finally:
                fleet.stop()
                await nc.close()
                await wire.close()
    print(json.dumps(report(tap.seen, windows), indent=2))


def report(seen: list[tuple[float, str]], windows: list[tuple[str, float, float]]) -> Any:
    """The message sequence of the median round trip, with times from its submission."""
    by_task = []
    for task_id, start, end in windows:
        inside = [(t, label(s, task_id)) for t, s in seen if start <= t <= end]
        by_task.append((end - start, task_id, start, inside))
    by_task.sort()
    latency, task_id, start, inside = by_task[len(by_task) // 2]
    counts: dict[str, list[int]] = defaultdict(list)
    for *_, messages in by_task:
        per: dict[str, int] = defaultdict(int)
        for _, name in messages:
            per[name] += 1
        for name, n in per.items():
            counts[name].append(n)
    return {
        "tasks": len(windows),
        "round_trip_ms": {
            "p50": round(latency * 1000, 2),
            "min": round(by_task[0][0] * 1000, 2),
        },
        "messages_per_round_trip": round(statistics.mean(len(m) for *_, m in by_task), 1),
        "median_task": task_id,
        "sequence_ms": [f"{(t - start) * 1000:7.2f}  {name}" for t, name in inside],
        "mean_count_by_subject": {
            name: round(sum(n) / len(by_task), 2)
            for name, n in sorted(counts.items(), key=lambda kv: -sum(kv[1]))
        },
    }


if __name__ == "__main__":
    asyncio.run(main())
