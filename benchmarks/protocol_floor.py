"""The floor of the guarantees: what a sub-task costs when it keeps them and does nothing else.

`throughput.py` compares hivebus with a raw hand-off (work in, result out: two durable
publishes). But a hivebus sub-task must also keep what the issue says may not be traded away:
the task's state in KV changed by compare-and-set, the run fenced by its checkpoint, a budget
reservation and its settlement, a checkpoint per step, every outcome an event. This benchmark
runs protocols written in nothing but nats-py (no FastStream, no pydantic, no hivebus code,
small JSON bodies), in the same processes as `throughput.py` runs (a client, one orchestrator
process, two worker processes) against its own nats-server with `sync_interval: always`,
beside the raw hand-off measured in the same run.

`guarded`, the least that keeps the guarantees:

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
note. So it is a lower bound for any implementation that keeps the guarantees, not a design.

`current`, hivebus's own messages for a one-sub-task task in hivebus's order (as
`timeline.py` lists them: 14 durable writes one after another, `SubTaskStarted` and the
running state beside them), and nothing else: what this protocol costs with no Python of
hivebus's around it.

    (a) N one-sub-task tasks submitted back to back: tasks finished per second (one protocol
        after the other)
    (b) sequential round trips: p50 / p99 ms (both protocols' processes running, their round
        trips in alternating rounds, as the machine's speed drifts within minutes)

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
from dataclasses import dataclass, field
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

    P = sys.argv[2]  # the protocol's prefix: its subjects, streams and buckets

    async def pull(js, subject, durable, stream, handle):
        sub = await js.pull_subscribe(subject, durable=durable, stream=stream)
        while True:
            try:
                msgs = await sub.fetch(64, timeout=1)
            except (TimeoutError, NatsTimeout):
                continue
            await asyncio.gather(*(handle(m) for m in msgs))

    def body(value):
        return json.dumps(value).encode()

    async def connect():  # JetStream, and the protocol's tasks and runs buckets
        js = (await nats.connect(sys.argv[1])).jetstream()
        return js, await js.key_value(f"{{P}}-tasks"), await js.key_value(f"{{P}}-runs")

    PAD = "x" * {CHECKPOINT_BYTES}
    """
)

GUARDED_ORCHESTRATOR = COMMON + textwrap.dedent(
    """
    async def main():
        js, tasks, runs = await connect()
        own = {}  # the revision of each state this process wrote last

        async def on_submit(msg):
            task = json.loads(msg.data)["task"]
            state = {"status": "running", "total": 1, "done": 0}
            ledger = {"reserved": 0, "spent": 0}
            try:
                rev, ledger_rev = await asyncio.gather(
                    tasks.create(f"{task}.meta", body(state)),
                    tasks.create(f"{task}.ledger", body(ledger)),
                )
            except KeyWrongLastSequenceError:  # a redelivery: accepted before
                await msg.ack()
                return
            own[task] = (rev, state)
            work = {"task": task, "sub": "only", "ledger_rev": ledger_rev}
            await js.publish(f"{P}.work", body(work), headers={"Nats-Msg-Id": f"{task}:only:1"})
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
                    await tasks.update(f"{task}.meta", body(state), last=rev)
                    break
                except KeyWrongLastSequenceError:
                    continue
            await js.publish(f"{P}.events.{task}.task_finished", body(state),
                             headers={"Nats-Msg-Id": f"{task}:finished"})
            await msg.ack()

        await asyncio.gather(
            pull(js, f"{P}.submit", "orch-submit", f"{P}TASKS", on_submit),
            pull(js, f"{P}.events.*.subtask_finished", "orch-finished", f"{P}EVENTS", on_finished),
        )
    asyncio.run(main())
    """
)

GUARDED_WORKER = COMMON + textwrap.dedent(
    """
    async def main():
        js, tasks, runs = await connect()

        async def reserve(key, rev):
            value = {"reserved": 0, "spent": 0}  # what the orchestrator created at `rev`
            while True:
                changed = {**value, "reserved": value["reserved"] + 1}
                try:
                    return await tasks.update(key, body(changed), last=rev), changed
                except KeyWrongLastSequenceError:  # another run of the task came first
                    entry = await tasks.get(key)
                    rev, value = entry.revision, json.loads(entry.value)

        async def on_work(msg):
            work = json.loads(msg.data)
            task, sub = work["task"], work["sub"]
            key = f"{task}.{sub}.1"
            try:
                run_rev = await runs.create(key, body({"steps": []}))
            except KeyWrongLastSequenceError:  # a redelivery: resume from the checkpoint
                run_rev = (await runs.get(key)).revision
            ledger = f"{task}.ledger"
            ledger_rev, value = await reserve(ledger, work["ledger_rev"])
            checkpoint = {"steps": [{"answer": "done", "pad": PAD}], "result": "done"}
            settled = {**value, "reserved": value["reserved"] - 1, "spent": value["spent"] + 1}
            await asyncio.gather(
                runs.update(key, body(checkpoint), last=run_rev),
                tasks.update(ledger, body(settled), last=ledger_rev),
            )
            await js.publish(f"{P}.events.{task}.subtask_finished",
                             body({"task": task, "sub": sub, "output": "done"}),
                             headers={"Nats-Msg-Id": f"{task}:{sub}:1:finished"})
            await msg.ack()

        await pull(js, f"{P}.work", "workers", f"{P}WORK", on_work)
    asyncio.run(main())
    """
)

CURRENT_ORCHESTRATOR = COMMON + textwrap.dedent(
    """
    # No validation, no cache, no compare-and-set retry (one sub-task: nothing races).
    async def main():
        js, tasks, runs = await connect()
        own = {}

        async def on_submit(msg):
            task = json.loads(msg.data)["task"]
            try:
                await tasks.create(f"{task}.plan", body({"subtasks": ["only"], "pad": PAD[:512]}))
            except KeyWrongLastSequenceError:
                await msg.ack()
                return
            # One change of the sub-task's state at a time (hivebus: compare-and-set, retried).
            mine = own[task] = {"written": asyncio.Event(), "lock": asyncio.Lock()}
            meta = {"status": "running", "total": 1, "done": 0}
            mine["meta"] = (await tasks.create(f"{task}.meta", body(meta)), meta)
            await asyncio.gather(
                js.publish(f"{P}.control.{task}.deadline_at", body({"task": task}),
                           headers={"Nats-Msg-Id": f"{task}:deadline"}),
                js.publish(f"{P}.work", body({"task": task, "sub": "only", "pad": PAD[:512]}),
                           headers={"Nats-Msg-Id": f"{task}:only:1"}),
            )
            st = {"status": "dispatched", "attempt": 1}
            mine["st"] = (await tasks.create(f"{task}.st.only", body(st)), st)
            mine["written"].set()
            await msg.ack()

        async def on_started(msg):
            task = json.loads(msg.data)["task"]
            mine = own.get(task)
            if mine is None:  # its task finished already
                await msg.ack()
                return
            await mine["written"].wait()  # the start can overtake the sub-task's first state
            async with mine["lock"]:
                rev, st = mine["st"]
                if st["status"] == "dispatched":  # not overtaken by its result
                    st = {**st, "status": "running"}
                    rev = await tasks.update(f"{task}.st.only", body(st), last=rev)
                    mine["st"] = (rev, st)
            await msg.ack()

        async def on_finished(msg):
            event = json.loads(msg.data)
            task = event["task"]
            mine = own[task]
            await mine["written"].wait()
            async with mine["lock"]:
                rev, st = mine["st"]
                st = {**st, "status": "completed", "output": event["output"]}
                mine["st"] = (await tasks.update(f"{task}.st.only", body(st), last=rev), st)
            rev, meta = mine["meta"]
            meta = {**meta, "done": 1}
            rev = await tasks.update(f"{task}.meta", body(meta), last=rev)
            await tasks.create(f"{task}.result", body({"status": "completed", "pad": PAD[:256]}))
            await asyncio.gather(
                js.publish(f"{P}.events.{task}.task_finished", body(meta),
                           headers={"Nats-Msg-Id": f"{task}:finished"}),
                js.publish(f"{P}.knowledge.write", body({"task": task, "pad": PAD[:512]}),
                           headers={"Nats-Msg-Id": f"{task}-summary"}),
            )
            meta = {**meta, "status": "completed"}
            await tasks.update(f"{task}.meta", body(meta), last=rev)
            del own[task]
            await msg.ack()

        await asyncio.gather(
            pull(js, f"{P}.submit", "orch-submit", f"{P}TASKS", on_submit),
            pull(js, f"{P}.events.*.subtask_started", "orch-started", f"{P}EVENTS", on_started),
            pull(js, f"{P}.events.*.subtask_finished", "orch-finished", f"{P}EVENTS", on_finished),
        )
    asyncio.run(main())
    """
)

CURRENT_WORKER = COMMON + textwrap.dedent(
    """
    async def main():
        js, tasks, runs = await connect()

        async def absent(kv, key):
            try:
                await kv.get(key)
            except KeyNotFoundError:
                return True
            return False

        async def on_work(msg):
            work = json.loads(msg.data)
            task, sub = work["task"], work["sub"]
            await absent(runs, f"{task}.{sub}.1")  # the checkpoint read
            await asyncio.gather(
                js.publish(f"{P}.events.{task}.subtask_started", body({"task": task}),
                           headers={"Nats-Msg-Id": f"{task}:{sub}:1:started"}),
                absent(tasks, f"{task}.cancel"),  # the cancel check
            )
            ledger = f"{task}.ledger"
            rev = await tasks.create(ledger, body({"reserved": 1, "spent": 0}))
            await tasks.update(ledger, body({"reserved": 0, "spent": 1}), last=rev)
            await js.publish(f"{P}.events.{task}.step", body({"task": task, "pad": PAD}),
                             headers={"Nats-Msg-Id": f"{task}:{sub}:1:step:1"})
            checkpoint = {"steps": [{"answer": "done", "pad": PAD}], "result": "done"}
            await runs.create(f"{task}.{sub}.1", body(checkpoint))
            await js.publish(f"{P}.events.{task}.subtask_finished",
                             body({"task": task, "sub": sub, "output": "done"}),
                             headers={"Nats-Msg-Id": f"{task}:{sub}:1:finished"})
            await msg.ack()

        await pull(js, f"{P}.work", "workers", f"{P}WORK", on_work)
    asyncio.run(main())
    """
)

PROTOCOLS = {
    "guarded": ("fl", GUARDED_ORCHESTRATOR, GUARDED_WORKER),
    "current": ("cur", CURRENT_ORCHESTRATOR, CURRENT_WORKER),
}
"""Each protocol's prefix, and the code of its orchestrator and of its workers."""


async def topology(js: Any, prefix: str) -> None:
    """The streams and buckets of one protocol, named after its prefix."""
    streams = {
        "TASKS": f"{prefix}.submit",
        "EVENTS": f"{prefix}.events.>",
        "CONTROL": f"{prefix}.control.>",
        "KNOWLEDGE": f"{prefix}.knowledge.write",
    }
    for name, subject in streams.items():
        await js.add_stream(
            StreamConfig(name=f"{prefix}{name}", subjects=[subject], storage=StorageType.FILE)
        )
    await js.add_stream(
        StreamConfig(
            name=f"{prefix}WORK",
            subjects=[f"{prefix}.work"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
        )
    )
    for bucket in ("tasks", "runs"):
        await js.create_key_value(
            KeyValueConfig(bucket=f"{prefix}-{bucket}", storage=StorageType.FILE)
        )


@dataclass
class Side:
    """One protocol's running processes, and how the client submits to it."""

    name: str
    prefix: str
    nc: Any
    js: Any
    fleet: Fleet
    waiting: dict[str, asyncio.Future[None]] = field(default_factory=dict)

    async def on_finished(self, msg: Any) -> None:
        """Core subscription callback: a task of this protocol finished."""
        future = self.waiting.pop(msg.subject.split(".")[2], None)
        if future is not None and not future.done():
            future.set_result(None)

    async def submit(self, task: str) -> asyncio.Future[None]:
        """Publish a submission; the future resolves with its `TaskFinished`."""
        future = self.waiting[task] = asyncio.get_running_loop().create_future()
        body = json.dumps({"task": task}).encode()
        await self.js.publish(f"{self.prefix}.submit", body, headers={"Nats-Msg-Id": task})
        return future

    async def round_trip(self, task: str) -> float:
        """Milliseconds from submitting one task to its end."""
        start = time.perf_counter()
        await asyncio.wait_for(await self.submit(task), 30)
        return (time.perf_counter() - start) * 1000

    async def stop(self) -> None:
        """Stop its processes and the client's connection."""
        self.fleet.stop()
        await self.nc.close()


async def start_side(url: str, name: str) -> Side:
    """One protocol's topology and processes (an orchestrator, two workers), warmed up."""
    prefix, orchestrator, worker = PROTOCOLS[name]
    nc = await nats.connect(url)
    js = nc.jetstream()
    await topology(js, prefix)
    fleet = Fleet()
    fleet.procs["orchestrator"] = subprocess.Popen(  # noqa: ASYNC220 - runs alongside
        [sys.executable, "-c", orchestrator, url, prefix]
    )
    for n in (1, 2):
        fleet.procs[f"worker-{n}"] = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-c", worker, url, prefix]
        )
    side = Side(name, prefix, nc, js, fleet)
    await nc.subscribe(f"{prefix}.events.*.task_finished", cb=side.on_finished)
    for warm in range(20):  # the processes connect and create their consumers
        await side.round_trip(f"w{warm}")
    return side


async def measure(
    sides: dict[str, Side], server_pid: int, counts: dict[str, int]
) -> dict[str, dict[str, Any]]:
    """(a) for each protocol in turn; then (b) in rounds that alternate the protocols.

    The machine's speed drifts within minutes, so the round trips of the protocols are
    interleaved (a round of each, five times) rather than measured one block after the other.
    """
    out: dict[str, dict[str, Any]] = {name: {} for name in sides}
    for name, side in sides.items():

        async def pipelined(side: Side = side) -> None:
            futures = [await side.submit(f"a{i}") for i in range(counts["a"])]
            await asyncio.wait_for(asyncio.gather(*futures), 600)

        measured = await timed(pipelined, side.fleet, server_pid)
        out[name]["a"] = {**measured, "per_s": round(counts["a"] / measured["s"], 1)}
        log(f"{name} (a): {out[name]['a']['per_s']} tasks/s")
    latencies: dict[str, list[float]] = {name: [] for name in sides}
    rounds = 5
    for r in range(rounds):
        for name, side in sides.items():
            for i in range(counts["b"] // rounds):
                latencies[name].append(await side.round_trip(f"b{r}-{i}"))
    for name in sides:
        out[name]["b"] = percentiles(latencies[name])
        log(f"{name} (b): p50 {out[name]['b']['p50_ms']} ms, p99 {out[name]['b']['p99_ms']} ms")
    return out


def ratios(raw: dict[str, Any], side: dict[str, Any]) -> dict[str, float]:
    """One protocol against the raw hand-off, as `throughput.py` states its targets."""
    return {
        "a_rate_vs_raw": round(side["a"]["per_s"] / raw["a"]["per_s"], 3),
        "b_p50_vs_raw": round(side["b"]["p50_ms"] / raw["b"]["p50_ms"], 2),
        "b_p99_vs_raw": round(side["b"]["p99_ms"] / raw["b"]["p99_ms"], 2),
    }


async def main() -> None:
    """The raw hand-off and each protocol on one fresh server; print the JSON report."""
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
            running = {name: await start_side(server.url, name) for name in PROTOCOLS}
            try:
                sides = await measure(running, pid, counts)
            finally:
                for side in running.values():
                    await side.stop()
    report = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "quick": args.quick,
        "counts": counts,
        "raw": raw,
        **sides,
        "ratios": {name: ratios(raw, side) for name, side in sides.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
