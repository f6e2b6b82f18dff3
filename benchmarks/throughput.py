"""Throughput and latency of hivebus beside the bus's own floor, measured in the same run.

Starts its own nats-server (`sync_interval: always`) and, as separate processes, the
orchestrator, the knowledge service and two agent processes (`hivebus serve ...`), all doing
no-op work (a scripted model that answers at once). In the same run, a raw nats-py baseline
does the same hand-off: the client publishes work to a work-queue stream, one of two worker
processes pulls it and publishes a result to a results stream, the client sees the result.

    (a) N one-sub-task tasks submitted one after another: tasks finished per second
    (b) sequential round trips (submit, wait for the end): p50 / p99 ms
    (c) one task of 1,000 independent sub-tasks and one that depends on them all: seconds
    (d) one task of N independent sub-tasks (1,000 / 5,000 / 10,000) and a 1,000-long chain:
        seconds, ms per sub-task, orchestrator peak RSS
    the knowledge store: summary notes committed per second during (a), the writes still
        queued at its end (also as seconds of (a)'s rate), and the seconds they took to drain

Every hivebus figure is given with its ratio to the baseline measured in this run, and the
CPU seconds each process spent. Not part of the test suite.

With `--trace`, every service exports traces and metrics over OTLP/HTTP to a sink process
that discards them (`otlp_sink.py`): run once with and once without to see tracing's cost.

Usage: .venv/bin/python benchmarks/throughput.py [--quick] [--only a,b,c,d] [--trace]
Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import yaml
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from hivebus.core import EmbeddedNats, configure_logging
from hivebus.core.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
HIVEBUS = ROOT / ".venv" / "bin" / "hivebus"
CLK_TCK = os.sysconf("SC_CLK_TCK")

FULL = {"a": 5000, "b": 500, "c": 1000, "d": [1000, 5000, 10_000], "chain": 1000}
QUICK = {"a": 300, "b": 50, "c": 100, "d": [200, 500], "chain": 50}

RAW_WORKER = textwrap.dedent(
    """
    import asyncio, sys, nats
    async def main():
        nc = await nats.connect(sys.argv[1])
        js = nc.jetstream()
        sub = await js.pull_subscribe("raw.work", durable="raw-workers", stream="RAWWORK")
        while True:
            try:
                msgs = await sub.fetch(64, timeout=1)
            except TimeoutError:  # nothing to do for a second (nats-py raises either kind)
                continue
            for msg in msgs:
                await js.publish("raw.results." + msg.data.decode(), msg.data)
                await msg.ack()
    asyncio.run(main())
    """
)


def log(text: str) -> None:
    """Progress on stderr."""
    print(text, file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Fleet:
    """The processes of one side of the comparison, by name."""

    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def cpu(self) -> dict[str, float]:
        """CPU seconds by process, now."""
        return {name: cpu_seconds(p.pid) for name, p in self.procs.items() if p.poll() is None}

    def stop(self) -> None:
        """Terminate every process and wait for it."""
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent by each process between two readings."""
    return {name: round(after[name] - before.get(name, 0.0), 2) for name in after}


async def timed(run: Callable[[], Awaitable[None]], fleet: Fleet, server: int) -> dict[str, Any]:
    """Run one measurement; return its wall seconds and the CPU each process spent."""
    before = {**fleet.cpu(), "nats-server": cpu_seconds(server)}
    start = time.perf_counter()
    await run()
    wall = time.perf_counter() - start
    after = {**fleet.cpu(), "nats-server": cpu_seconds(server)}
    return {"s": round(wall, 3), "cpu_s": cpu_delta(before, after)}


# -- the raw baseline -------------------------------------------------------------------------


async def raw_side(url: str, server_pid: int, counts: dict[str, Any]) -> dict[str, Any]:
    """The same hand-off with nothing but nats-py: work queue in, results stream out."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name="RAWWORK",
            subjects=["raw.work"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
        )
    )
    await js.add_stream(
        StreamConfig(name="RAWRESULTS", subjects=["raw.results.>"], storage=StorageType.FILE)
    )
    fleet = Fleet()
    for n in (1, 2):
        fleet.procs[f"raw-worker-{n}"] = subprocess.Popen(  # noqa: ASYNC220 - runs alongside
            [sys.executable, "-c", RAW_WORKER, url]
        )
    seen: dict[str, asyncio.Future[None]] = {}
    done = asyncio.Event()
    expected = 0

    async def on_result(msg: Any) -> None:
        key = msg.subject.rsplit(".", 1)[-1]
        future = seen.pop(key, None)
        if future is not None and not future.done():
            future.set_result(None)
        if not seen and expected:
            done.set()

    await nc.subscribe("raw.results.>", cb=on_result)
    await asyncio.sleep(1.0)  # the workers connect
    out: dict[str, Any] = {}

    async def pipelined() -> None:
        nonlocal expected
        loop = asyncio.get_running_loop()
        expected = counts["a"]
        for i in range(counts["a"]):
            seen[f"p{i}"] = loop.create_future()
        for i in range(counts["a"]):
            await js.publish("raw.work", f"p{i}".encode())
        await asyncio.wait_for(done.wait(), 600)

    measured = await timed(pipelined, fleet, server_pid)
    out["a"] = {**measured, "per_s": round(counts["a"] / measured["s"], 1)}
    log(f"raw (a): {out['a']['per_s']} hand-offs/s")
    latencies = []
    for i in range(counts["b"]):
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        seen[f"s{i}"] = future
        start = time.perf_counter()
        await js.publish("raw.work", f"s{i}".encode())
        await asyncio.wait_for(future, 30)
        latencies.append((time.perf_counter() - start) * 1000)
    out["b"] = percentiles(latencies)
    log(f"raw (b): p50 {out['b']['p50_ms']} ms, p99 {out['b']['p99_ms']} ms")
    fleet.stop()
    await nc.close()
    return out


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50 and p99 in ms."""
    ordered = sorted(latencies)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "n": len(ordered),
    }


# -- hivebus ----------------------------------------------------------------------------------


def write_config(directory: Path) -> Path:
    """A configuration with one no-op role: a scripted model that answers at once."""
    (directory / "ok.yaml").write_text(yaml.safe_dump([{"text": "ok"}, {"then": "repeat"}]))
    config = {
        "workspace": "workspace",
        "roles": {
            "worker": {
                "system": "s",
                "model": "scripted:ok.yaml",
                "concurrency": 32,
                "validators": [],
            }
        },
    }
    path = directory / "hivebus.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_services(
    url: str, config: Path, knowledge: Path, logs: Path, otlp: str | None = None
) -> Fleet:
    """The orchestrator, the knowledge service and two agent processes, as containers run them.

    With `otlp`, every service exports its traces and metrics there.
    """
    tracing = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp} if otlp else {}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("HIVEBUS_", "ANTHROPIC_"))},
        "HIVEBUS_NATS_URL": url,
        "HIVEBUS_CONFIG_FILE": str(config),
        "HIVEBUS_KNOWLEDGE_DIR": str(knowledge),
        "HIVEBUS_LOG_LEVEL": "warning",
        "HIVEBUS_LOG_FORMAT": "json",
        **tracing,
    }
    logs.mkdir(parents=True, exist_ok=True)
    commands = {
        "orchestrator": ["serve", "orchestrator"],
        "knowledge": ["serve", "knowledge"],
        "agent-1": ["serve", "agent", "--role", "worker"],
        "agent-2": ["serve", "agent", "--role", "worker"],
    }
    fleet = Fleet()
    for name, args in commands.items():
        with (logs / f"{name}.log").open("wb") as out:
            fleet.procs[name] = subprocess.Popen(
                [str(HIVEBUS), *args], env=env, stdout=out, stderr=subprocess.STDOUT
            )
    return fleet


def plan(task_id: str, subtasks: list[dict[str, Any]]) -> bytes:
    """A submission body."""
    body = {
        "task_id": task_id,
        "goal": "no-op",
        "budget": {"max_tokens": 100_000_000, "max_cost_usd": 1000.0, "deadline_s": 3000},
        "plan": {"subtasks": subtasks},
    }
    return json.dumps(body).encode()


def one(task_id: str) -> bytes:
    """A one-sub-task task."""
    return plan(task_id, [{"id": "only", "role": "worker", "prompt": "p"}])


class Finishes:
    """Waits for `task_finished` events, by task id."""

    def __init__(self) -> None:
        """Nothing awaited yet."""
        self.waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.commits = 0

    def expect(self, task_id: str) -> asyncio.Future[dict[str, Any]]:
        """A future resolved with the task's `TaskFinished` (as a dict)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[task_id] = future
        return future

    async def on_event(self, msg: Any) -> None:
        """Core subscription callback for every event."""
        kind = msg.subject.rsplit(".", 1)[-1]
        if kind == "note_committed":
            self.commits += 1
            return
        if kind not in {"task_finished", "task_rejected"}:
            return
        task_id = msg.subject.split(".")[2]
        future = self.waiting.pop(task_id, None)
        if future is not None and not future.done():
            future.set_result(json.loads(msg.data))


async def knowledge_backlog(js: Any) -> int:
    """Writes accepted on the KNOWLEDGE stream and not yet applied."""
    info = await js.consumer_info("KNOWLEDGE", "knowledge-writer")
    return int(info.num_pending + info.num_ack_pending)


async def hivebus_side(  # noqa: C901, PLR0915 - one measurement after the other, in order
    url: str,
    server_pid: int,
    counts: dict[str, Any],
    work: Path,
    only: set[str],
    *,
    otlp: str | None = None,
) -> dict[str, Any]:
    """Every hivebus measurement against one stack of separate service processes."""
    config = write_config(work)
    nc = await nats.connect(url, max_reconnect_attempts=-1)
    js = nc.jetstream()
    fleet = start_services(url, config, work / "knowledge", work / "logs", otlp)
    finishes = Finishes()
    await nc.subscribe("hive.events.*.task_finished", cb=finishes.on_event)
    await nc.subscribe("hive.events.*.task_rejected", cb=finishes.on_event)
    await nc.subscribe("hive.events.*.note_committed", cb=finishes.on_event)
    await wait_ready(js, fleet)
    out: dict[str, Any] = {}
    orchestrator = fleet.procs["orchestrator"].pid

    async def submit(task_id: str, body: bytes) -> asyncio.Future[dict[str, Any]]:
        future = finishes.expect(task_id)
        await js.publish("hive.tasks.submit", body, headers={"Nats-Msg-Id": task_id})
        return future

    if "a" in only:
        commits_before = finishes.commits
        futures: list[asyncio.Future[dict[str, Any]]] = []

        async def pipelined() -> None:
            futures.extend([await submit(f"a{i}", one(f"a{i}")) for i in range(counts["a"])])
            await asyncio.wait_for(asyncio.gather(*futures), 3600)

        measured = await timed(pipelined, fleet, server_pid)
        statuses = {f.result()["status"] for f in futures}
        committed = finishes.commits - commits_before
        out["a"] = {
            **measured,
            "per_s": round(counts["a"] / measured["s"], 1),
            "statuses": sorted(statuses),
            "knowledge_commits_per_s": round(committed / measured["s"], 1),
            "knowledge_backlog_at_end": await knowledge_backlog(js),
        }
        out["a"]["knowledge_backlog_s_of_a"] = round(
            out["a"]["knowledge_backlog_at_end"] / out["a"]["per_s"], 2
        )
        out["a"]["knowledge_drain_s"] = await drain_knowledge(js)
        log(
            f"hivebus (a): {out['a']['per_s']} tasks/s, knowledge {committed} commits, "
            f"{out['a']['knowledge_backlog_at_end']} queued, drained in "
            f"{out['a']['knowledge_drain_s']} s"
        )
    if "b" in only:
        latencies = []
        for i in range(counts["b"]):
            start = time.perf_counter()
            await asyncio.wait_for(await submit(f"b{i}", one(f"b{i}")), 60)
            latencies.append((time.perf_counter() - start) * 1000)
        out["b"] = percentiles(latencies)
        log(f"hivebus (b): p50 {out['b']['p50_ms']} ms, p99 {out['b']['p99_ms']} ms")
    if "c" in only:
        n = counts["c"]
        subtasks: list[dict[str, Any]] = [
            {"id": f"s{i}", "role": "worker", "prompt": "p"} for i in range(n)
        ]
        subtasks.append(
            {
                "id": "all",
                "role": "worker",
                "prompt": "p",
                "depends_on": [f"s{i}" for i in range(n)],
            }
        )
        result: dict[str, Any] = {}

        async def fan_in() -> None:
            result.update(await asyncio.wait_for(await submit("c", plan("c", subtasks)), 3600))

        measured = await timed(fan_in, fleet, server_pid)
        out["c"] = {**measured, "subtasks": n + 1, "status": result.get("status")}
        log(f"hivebus (c): {out['c']['s']} s, {out['c']['status']}")
    if "d" in only:
        out["d"] = []
        shapes = [("independent", n) for n in counts["d"]] + [("chain", counts["chain"])]
        for shape, n in shapes:
            if shape == "chain":
                subtasks = [
                    {"id": f"s{i}", "role": "worker", "prompt": "p"}
                    | ({"depends_on": [f"s{i - 1}"]} if i else {})
                    for i in range(n)
                ]
            else:
                subtasks = [{"id": f"s{i}", "role": "worker", "prompt": "p"} for i in range(n)]
            task_id = f"d-{shape}-{n}"
            result = {}

            async def run_one(
                task_id: str = task_id,
                subtasks: list[Any] = subtasks,
                result: dict[str, Any] = result,
            ) -> None:
                future = await submit(task_id, plan(task_id, subtasks))
                result.update(await asyncio.wait_for(future, 3600))

            measured = await timed(run_one, fleet, server_pid)
            out["d"].append(
                {
                    "shape": shape,
                    "subtasks": n,
                    **measured,
                    "ms_per_subtask": round(measured["s"] * 1000 / n, 2),
                    "status": result.get("status"),
                    "reason": str(result.get("reason") or result.get("errors"))[:200],
                    "orchestrator_peak_rss_mb": round(peak_rss_mb(orchestrator), 1),
                }
            )
            log(f"hivebus (d) {shape} {n}: {measured['s']} s, {result.get('status')}")
    fleet.stop()
    await nc.close()
    return out


async def wait_ready(js: Any, fleet: Fleet) -> None:
    """Wait until every service's consumer has a subscriber pulling from it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for name, proc in fleet.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}")
        try:
            agent = await js.consumer_info("WORK", "agent-worker")
            orch = await js.consumer_info("TASKS", "orchestrator-submit")
            writer = await js.consumer_info("KNOWLEDGE", "knowledge-writer")
        except Exception:  # noqa: BLE001 - not provisioned yet
            await asyncio.sleep(0.2)
            continue
        if all(i.num_waiting for i in (agent, orch, writer)):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the services did not start pulling within 60 s")


async def drain_knowledge(js: Any, limit_s: float = 120) -> float:
    """Let the knowledge store catch up before the next measurement (bounded); seconds taken.

    Polled every 50 ms, so the seconds say how long the store's queue took to empty, with the
    other services idle by then.
    """
    start = time.monotonic()
    deadline = start + limit_s
    while await knowledge_backlog(js) and time.monotonic() < deadline:  # noqa: ASYNC110 - a server-side count
        await asyncio.sleep(0.05)
    return round(time.monotonic() - start, 2)


def ratios(raw: dict[str, Any], hive: dict[str, Any]) -> dict[str, Any]:
    """Each hivebus figure against the baseline of this run, and the issue's targets."""
    out: dict[str, Any] = {}
    if "a" in hive and "a" in raw:
        out["a_rate_vs_raw"] = round(hive["a"]["per_s"] / raw["a"]["per_s"], 3)
        out["a_target_min"] = 0.35
        out["knowledge_commits_vs_a"] = round(
            hive["a"]["knowledge_commits_per_s"] / hive["a"]["per_s"], 3
        )
    if "b" in hive and "b" in raw:
        out["b_p50_vs_raw"] = round(hive["b"]["p50_ms"] / raw["b"]["p50_ms"], 2)
        out["b_p99_vs_raw"] = round(hive["b"]["p99_ms"] / raw["b"]["p99_ms"], 2)
        out["b_targets_max"] = {"p50": 3, "p99": 10}
    if "c" in hive and "a" in hive:
        allowed = 1.2 * hive["c"]["subtasks"] / hive["a"]["per_s"]
        out["c_s_vs_allowed"] = round(hive["c"]["s"] / allowed, 3)
    independent = [d for d in hive.get("d", []) if d["shape"] == "independent"]
    if len(independent) > 1:
        out["d_ms_per_subtask_growth"] = round(
            independent[-1]["ms_per_subtask"] / independent[0]["ms_per_subtask"], 3
        )
        out["d_growth_target_max"] = 1.2
    return out


def start_sink() -> tuple[subprocess.Popen[str], str]:
    """The discarding OTLP endpoint, as its own process; returns it and its URL."""
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "otlp_sink.py"), str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    return sink, f"http://127.0.0.1:{port}"


def stop_sink(sink: subprocess.Popen[str]) -> dict[str, Any]:
    """Stop the sink; what it took and the CPU it spent."""
    cpu = cpu_seconds(sink.pid)
    sink.terminate()
    out, _ = sink.communicate(timeout=10)
    taken = ast.literal_eval(out.strip() or "{}")
    return {"cpu_s": round(cpu, 2), **taken}


async def main() -> None:
    """Run both sides on one fresh server and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    parser.add_argument("--only", default="a,b,c,d", help="which measurements (a,b,c,d)")
    parser.add_argument("--tasks", type=int, help="how many tasks (a) submits (for profiling)")
    parser.add_argument("--trace", action="store_true", help="services export OTLP to a sink")
    args = parser.parse_args()
    configure_logging("console", "warning")  # logs to stderr: stdout is the report
    counts = dict(QUICK if args.quick else FULL)
    if args.tasks:
        counts["a"] = args.tasks
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="hivebus-bench-") as tmp:
        work = Path(tmp)
        async with EmbeddedNats(work / "nats") as server:
            assert server._proc is not None  # noqa: SLF001, S101 - the benchmark reads its CPU
            pid = server._proc.pid  # noqa: SLF001
            raw = await raw_side(server.url, pid, counts)
            sink, otlp = start_sink() if args.trace else (None, None)
            try:
                hive = await hivebus_side(server.url, pid, counts, work, only, otlp=otlp)
            finally:
                taken = stop_sink(sink) if sink is not None else None
    if taken is not None:
        hive["otlp_sink"] = taken
    report = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "quick": args.quick,
        "tracing": args.trace,
        "counts": counts,
        "raw": raw,
        "hivebus": hive,
        "ratios": ratios(raw, hive),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
