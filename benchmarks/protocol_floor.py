"""The floor of the guarantees: what a sub-task costs when it keeps them and does nothing else.

`throughput.py` compares hivebus with a raw hand-off (work in, result out: two durable
publishes). But a hivebus sub-task must also keep what the issue says may not be traded away:
the task's state in KV changed by compare-and-set, the run fenced by its checkpoint, a budget
reservation and its settlement, a checkpoint per step, every outcome an event. This benchmark
measures that protocol written in nothing but nats-py (no FastStream, no pydantic, no hivebus
code, small JSON bodies), in the same processes as `throughput.py` runs (a client, one
orchestrator process, two worker processes) against its own nats-server with
`sync_interval: always`, beside the raw hand-off measured in the same run:

    client        publish the submission (TASKS stream)                              1
    orchestrator  create the task's state and its ledger in KV (both at once)        2
                  publish the assignment (WORK stream), ack the submission           3
    worker        claim the run's checkpoint (create; a redelivery reads it)         4
                  reserve on the ledger (compare-and-set at the revision it was given)5
                  [the step: nothing]
                  the checkpoint and the settlement (both at once, compare-and-set)  6
                  publish SubTaskFinished (EVENTS stream), ack the assignment        7
    orchestrator  count the result in the state (compare-and-set at its own revision)8
                  publish TaskFinished, ack                                          9
    client        sees TaskFinished

Nine durable writes one after another where the raw hand-off has two, each answered only
once it is on disk. Left out, though hivebus has them: `SubTaskStarted`, the step event, the
cancel check, the deadline, the sub-task's own state, the task's result record, the summary
note. So this is a lower bound for any implementation that keeps the guarantees, not a design.

    (a) N one-sub-task tasks submitted back to back: tasks finished per second
    (b) sequential round trips: p50 / p99 ms

Usage: .venv/bin/python benchmarks/protocol_floor.py [--quick]
Prints one JSON object on stdout; progress goes to stderr. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import nats
from nats.js.api import KeyValueConfig, RetentionPolicy, StorageType, StreamConfig

from hivebus.core import EmbeddedNats, configure_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import Fleet, log, percentiles, raw_side, timed

FULL = {"a": 5000, "b": 500}
QUICK = {"a": 500, "b": 100}

CHECKPOINT_BYTES = 1024
"""Size of a checkpoint record (hivebus's are larger: a few KiB with the step's messages)."""

COMMON = textwrap.dedent(
    f"""
    import asyncio, json, sys, nats
    from nats.js.errors import KeyWrongLastSequenceError, KeyNotFoundError
    from nats.errors import TimeoutError as NatsTimeout

    async def pull(js, subject, durable, stream, handle):
        sub = await js.pull_subscribe(subject, durable=durable, stream=stream)
        while True:
            try:
                msgs = await sub.fetch(64, timeout=1)
            except (TimeoutError, NatsTimeout):
                continue
            await asyncio.gather(*(handle(m) for m in msgs))

    PAD = "x" * {CHECKPOINT_BYTES}
    """
)

ORCHESTRATOR = COMMON + textwrap.dedent(
    """
    async def main():
        nc = await nats.connect(sys.argv[1])
        js = nc.jetstream()
        tasks = await js.key_value("floor-tasks")
        own = {}  # the revision of each state this process wrote last

        async def on_submit(msg):
            task = json.loads(msg.data)["task"]
            state = {"status": "running", "total": 1, "done": 0}
            ledger = {"reserved": 0, "spent": 0}
            try:
                rev, ledger_rev = await asyncio.gather(
                    tasks.create(f"{task}.meta", json.dumps(state).encode()),
                    tasks.create(f"{task}.ledger", json.dumps(ledger).encode()),
                )
            except KeyWrongLastSequenceError:  # a redelivery: accepted before
                await msg.ack()
                return
            own[task] = (rev, state)
            work = {"task": task, "sub": "only", "ledger_rev": ledger_rev}
            await js.publish("floor.work", json.dumps(work).encode(),
                             headers={"Nats-Msg-Id": f"{task}:only:1"})
            await msg.ack()

        async def on_finished(msg):
            event = json.loads(msg.data)
            task = event["task"]
            while True:
                if task in own:
                    rev, state = own.pop(task)
                else:
                    entry = await tasks.get(f"{task}.meta")
                    rev, state = entry.revision, json.loads(entry.value)
                state = {**state, "done": state["done"] + 1}
                if state["done"] >= state["total"]:
                    state["status"] = "completed"
                try:
                    await tasks.update(f"{task}.meta", json.dumps(state).encode(), last=rev)
                    break
                except KeyWrongLastSequenceError:
                    continue
            await js.publish(f"floor.events.{task}.task_finished", json.dumps(state).encode(),
                             headers={"Nats-Msg-Id": f"{task}:finished"})
            await msg.ack()

        await asyncio.gather(
            pull(js, "floor.submit", "orch-submit", "FLTASKS", on_submit),
            pull(js, "floor.events.*.subtask_finished", "orch-finished", "FLEVENTS", on_finished),
        )
    asyncio.run(main())
    """
)

WORKER = COMMON + textwrap.dedent(
    """
    async def main():
        nc = await nats.connect(sys.argv[1])
        js = nc.jetstream()
        tasks = await js.key_value("floor-tasks")
        runs = await js.key_value("floor-runs")

        async def reserve(key, rev):
            value = {"reserved": 0, "spent": 0}  # what the orchestrator created at `rev`
            while True:
                changed = {**value, "reserved": value["reserved"] + 1}
                try:
                    return await tasks.update(key, json.dumps(changed).encode(), last=rev), changed
                except KeyWrongLastSequenceError:  # another run of the task came first
                    entry = await tasks.get(key)
                    rev, value = entry.revision, json.loads(entry.value)

        async def on_work(msg):
            work = json.loads(msg.data)
            task, sub = work["task"], work["sub"]
            key = f"{task}.{sub}.1"
            try:
                run_rev = await runs.create(key, json.dumps({"steps": []}).encode())
            except KeyWrongLastSequenceError:  # a redelivery: resume from the checkpoint
                run_rev = (await runs.get(key)).revision
            ledger = f"{task}.ledger"
            ledger_rev, value = await reserve(ledger, work["ledger_rev"])
            checkpoint = {"steps": [{"answer": "done", "pad": PAD}], "result": "done"}
            settled = {**value, "reserved": value["reserved"] - 1, "spent": value["spent"] + 1}
            await asyncio.gather(
                runs.update(key, json.dumps(checkpoint).encode(), last=run_rev),
                tasks.update(ledger, json.dumps(settled).encode(), last=ledger_rev),
            )
            await js.publish(f"floor.events.{task}.subtask_finished",
                             json.dumps({"task": task, "sub": sub, "output": "done"}).encode(),
                             headers={"Nats-Msg-Id": f"{task}:{sub}:1:finished"})
            await msg.ack()

        await pull(js, "floor.work", "floor-workers", "FLWORK", on_work)
    asyncio.run(main())
    """
)


async def topology(js: Any) -> None:
    """The streams and buckets of the guarded protocol."""
    await js.add_stream(
        StreamConfig(name="FLTASKS", subjects=["floor.submit"], storage=StorageType.FILE)
    )
    await js.add_stream(
        StreamConfig(
            name="FLWORK",
            subjects=["floor.work"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
        )
    )
    await js.add_stream(
        StreamConfig(name="FLEVENTS", subjects=["floor.events.>"], storage=StorageType.FILE)
    )
    for bucket in ("floor-tasks", "floor-runs"):
        await js.create_key_value(KeyValueConfig(bucket=bucket, storage=StorageType.FILE))


async def guarded_side(url: str, server_pid: int, counts: dict[str, int]) -> dict[str, Any]:
    """The guarded protocol: an orchestrator process and two worker processes."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await topology(js)
    fleet = Fleet()
    fleet.procs["orchestrator"] = subprocess.Popen([sys.executable, "-c", ORCHESTRATOR, url])  # noqa: ASYNC220 - runs alongside
    for n in (1, 2):
        fleet.procs[f"worker-{n}"] = subprocess.Popen([sys.executable, "-c", WORKER, url])  # noqa: ASYNC220
    waiting: dict[str, asyncio.Future[None]] = {}

    async def on_finished(msg: Any) -> None:
        future = waiting.pop(msg.subject.split(".")[2], None)
        if future is not None and not future.done():
            future.set_result(None)

    await nc.subscribe("floor.events.*.task_finished", cb=on_finished)

    async def submit(task: str) -> asyncio.Future[None]:
        future = waiting[task] = asyncio.get_running_loop().create_future()
        body = json.dumps({"task": task}).encode()
        await js.publish("floor.submit", body, headers={"Nats-Msg-Id": task})
        return future

    try:
        for warm in range(20):  # the processes connect and create their consumers
            await asyncio.wait_for(await submit(f"w{warm}"), 30)
        out: dict[str, Any] = {}

        async def pipelined() -> None:
            futures = [await submit(f"a{i}") for i in range(counts["a"])]
            await asyncio.wait_for(asyncio.gather(*futures), 600)

        measured = await timed(pipelined, fleet, server_pid)
        out["a"] = {**measured, "per_s": round(counts["a"] / measured["s"], 1)}
        log(f"guarded (a): {out['a']['per_s']} tasks/s")
        latencies = []
        for i in range(counts["b"]):
            start = time.perf_counter()
            await asyncio.wait_for(await submit(f"b{i}"), 30)
            latencies.append((time.perf_counter() - start) * 1000)
        out["b"] = percentiles(latencies)
        log(f"guarded (b): p50 {out['b']['p50_ms']} ms, p99 {out['b']['p99_ms']} ms")
        return out
    finally:
        fleet.stop()
        await nc.close()


def ratios(raw: dict[str, Any], guarded: dict[str, Any]) -> dict[str, float]:
    """The guarded protocol against the raw hand-off, as `throughput.py` states its targets."""
    return {
        "a_rate_vs_raw": round(guarded["a"]["per_s"] / raw["a"]["per_s"], 3),
        "b_p50_vs_raw": round(guarded["b"]["p50_ms"] / raw["b"]["p50_ms"], 2),
        "b_p99_vs_raw": round(guarded["b"]["p99_ms"] / raw["b"]["p99_ms"], 2),
    }


async def main() -> None:
    """Both sides on one fresh server; print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    args = parser.parse_args()
    configure_logging("console", "warning")
    counts = dict(QUICK if args.quick else FULL)
    with tempfile.TemporaryDirectory(prefix="hivebus-floor-") as tmp:
        async with EmbeddedNats(Path(tmp) / "nats") as server:
            assert server._proc is not None  # noqa: SLF001, S101 - the benchmark reads its CPU
            pid = server._proc.pid  # noqa: SLF001
            raw = await raw_side(server.url, pid, counts)
            guarded = await guarded_side(server.url, pid, counts)
    report = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "quick": args.quick,
        "counts": counts,
        "raw": raw,
        "guarded": guarded,
        "ratios": ratios(raw, guarded),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
