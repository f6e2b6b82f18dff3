"""Servers and services for the bus chaos tests: nats clusters, `hivebus serve` processes, probes.

Services run as `hivebus serve ...` with JSON info logs (their stderr) captured to files, so
a test that fails can say what a service was doing; `BusProbe.events` reads a task's whole
history from EVENTS after the fact, independently of what a follower saw while servers were
dying.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Self

import nats
import nats.errors
from hivetest import HIVEBUS, process_env
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from hivebus.contracts import subjects
from hivebus.core.embedded import free_port, nats_server_binary

TESTS = Path(__file__).resolve().parent.parent
TOOLS_DIR = TESTS / "e2e"
"""Where `slowtools` lives: the child processes import it through PYTHONPATH."""
SHIPPED_CLUSTER = TESTS.parent / "infra" / "nats" / "cluster"
"""The 3-node cluster configuration hivebus ships (for docker-compose and real hosts)."""


def service_env(url: str, **extra: str) -> dict[str, str]:
    """Child environment: the server URL, short bus timings, JSON info logs, the test tools."""
    timings = {
        "HIVEBUS_ORCHESTRATOR_ACK_WAIT_S": "2",
        "HIVEBUS_WORK_ACK_WAIT_S": "5",
        "HIVEBUS_HEARTBEAT_S": "1",
    }
    return process_env(
        HIVEBUS_NATS_URL=url,
        HIVEBUS_LOG_LEVEL="info",
        PYTHONPATH=str(TOOLS_DIR),
        **{**timings, **extra},
    )


class Service:
    """One `hivebus serve` process whose stderr goes to `<log_dir>/<name>.log`."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        """Start `hivebus serve *args` at once."""
        self.name = name
        self.log = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [str(HIVEBUS), "serve", *args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL the process group and reap it."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a bound (cleanup)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 15) -> str:
        """The last log lines, for a failure message."""
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return f"--- {self.name} (exit {self.proc.poll()}) ---\n" + "\n".join(
            text.splitlines()[-lines:]
        )


def agent(config: Path, role: str, env: dict[str, str], log_dir: Path, name: str) -> Service:
    """An agent process serving `role`."""
    return Service(name, ["agent", "--role", role, "--config", str(config)], env, log_dir)


def orchestrator(config: Path, env: dict[str, str], log_dir: Path, name: str) -> Service:
    """An orchestrator process."""
    return Service(name, ["orchestrator", "--config", str(config)], env, log_dir)


def log_events(service: Service, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of `service` whose `event` is `event`."""
    found = []
    for line in service.log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("event") == event:
                found.append(record)
    return found


def layered_plan(task_id: str, role: str, widths: list[int]) -> dict[str, Any]:
    """A submission whose sub-tasks form layers; each depends on two of the layer before."""
    subtasks: list[dict[str, Any]] = []
    previous: list[str] = []
    for layer, width in enumerate(widths):
        current = [f"l{layer}n{i}" for i in range(width)]
        for i, sid in enumerate(current):
            spec: dict[str, Any] = {"id": sid, "role": role, "prompt": "p"}
            if previous:
                deps = {previous[i % len(previous)], previous[(i + 1) % len(previous)]}
                spec["depends_on"] = sorted(deps)
            subtasks.append(spec)
        previous = current
    return {"task_id": task_id, "goal": "g", "plan": {"subtasks": subtasks}}


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout_s: float, what: str, every_s: float = 0.1
) -> None:
    """Poll `check` until it is true; raise TimeoutError naming `what` after `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            while not await check():  # noqa: ASYNC110 - remote state: nothing local to await
                await asyncio.sleep(every_s)
    except TimeoutError:
        raise TimeoutError(f"{what}: not within {timeout_s:g}s") from None


class BusProbe:
    """A test-side connection that survives server restarts and reads a task's events."""

    def __init__(self, url: str | list[str]) -> None:
        """Connect lazily to `url` (one URL or a cluster's list)."""
        self.url = url
        self.nc: Any = None

    async def __aenter__(self) -> Self:
        """Connect, then reconnect forever (bounded by the caller's timeouts)."""
        self.nc = await nats.connect(
            self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close."""
        await self.nc.close()

    async def count(self, task_id: str, kind: subjects.EventKind) -> int | None:
        """How many `kind` events of the task EVENTS holds; None while the bus does not answer."""
        subject = subjects.event(task_id, kind)
        try:
            info = await self.nc.jetstream(timeout=1.0).stream_info(
                subjects.EVENTS_STREAM, subjects_filter=subject
            )
        except Exception:  # noqa: BLE001 - any failure here means "not answering yet"
            return None
        return (info.state.subjects or {}).get(subject, 0)

    async def dispatched(self) -> int | None:
        """How many sub-task dispatches WORK ever stored (deduplicated ones are not stored)."""
        try:
            info = await self.nc.jetstream(timeout=1.0).stream_info(subjects.WORK_STREAM)
        except Exception:  # noqa: BLE001 - any failure here means "not answering yet"
            return None
        return int(info.state.last_seq)

    async def leader(self, stream: str) -> str:
        """The server name of a stream's current leader."""
        info = await self.nc.jetstream(timeout=5.0).stream_info(stream)
        return str(info.cluster.leader)

    async def events(self, task_id: str) -> list[tuple[str, dict[str, Any]]]:
        """Every stored event of the task, in order, as `(kind, body)`.

        Retried whole for a bounded time: right after a node died, a cluster may need a
        few seconds before it places a new consumer.
        """
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                return await self._events(task_id)
            except nats.errors.Error:
                if asyncio.get_running_loop().time() > deadline:
                    raise
            await asyncio.sleep(0.5)

    async def _events(self, task_id: str) -> list[tuple[str, dict[str, Any]]]:
        js = self.nc.jetstream(timeout=5.0)
        wanted = subjects.events_of(task_id)
        info = await js.stream_info(subjects.EVENTS_STREAM, subjects_filter=wanted)
        total = sum((info.state.subjects or {}).values())
        sub = await js.pull_subscribe(
            wanted,
            stream=subjects.EVENTS_STREAM,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
        )
        found: list[tuple[str, dict[str, Any]]] = []
        try:
            while len(found) < total:
                batch = await sub.fetch(min(256, total - len(found)), timeout=5)
                found.extend((m.subject.rsplit(".", 1)[-1], json.loads(m.data)) for m in batch)
        finally:
            await sub.unsubscribe()
        return found


def localize(
    text: str,
    ports: dict[str, tuple[int, int, int]],
    name: str,
    store: Path,
    authorization: str = "",
) -> str:
    """A shipped node configuration made runnable on loopback.

    `ports` maps each node name (`nats-1`...) to its (client, cluster, http) ports; `name`
    is this node. The store goes to `store` and routes to the other nodes' loopback ports.
    The shipped `include` of the identities becomes `authorization` (none: an open server).
    Raises ValueError when the shipped file no longer has a line this relies on.
    """
    client, cluster, http = ports[name]
    replacements = [
        (r'(?m)^include "\.\./auth\.conf"$', authorization.replace("\\", "\\\\")),
        (r"(?m)^listen: 0\.0\.0\.0:4222$", f"listen: 127.0.0.1:{client}"),
        (r"(?m)^http: 0\.0\.0\.0:8222$", f"http: 127.0.0.1:{http}"),
        (r"store_dir: /data/jetstream", f'store_dir: "{store.as_posix()}"'),
        (r"(?m)^(\s+)listen: 0\.0\.0\.0:6222$", rf"\g<1>listen: 127.0.0.1:{cluster}"),
    ]
    for pattern, value in replacements:
        text, found = re.subn(pattern, value, text)
        if found != 1:
            raise ValueError(f"shipped config has no single line matching {pattern!r}")
    text, routes = re.subn(
        r"nats-route://(nats-\d+):6222",
        lambda m: f"nats-route://127.0.0.1:{ports[m[1]][1]}",
        text,
    )
    if routes != len(ports) - 1:
        raise ValueError(f"expected {len(ports) - 1} routes, found {routes}")
    return text


class Cluster:
    """Three nats-servers on loopback from the shipped cluster configuration, each with a store."""

    NAMES = ("nats-1", "nats-2", "nats-3")

    def __init__(self, directory: Path) -> None:
        """Pick free ports and write the localized configurations under `directory`."""
        self.directory = directory
        self.ports = {n: (free_port(), free_port(), free_port()) for n in self.NAMES}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for name in self.NAMES:
            shipped = (SHIPPED_CLUSTER / f"{name}.conf").read_text(encoding="utf-8")
            conf = localize(shipped, self.ports, name, directory / name / "jetstream")
            (directory / name).mkdir(parents=True, exist_ok=True)
            (directory / f"{name}.conf").write_text(conf, encoding="utf-8")

    def url(self, name: str) -> str:
        """Client URL of one node."""
        return f"nats://127.0.0.1:{self.ports[name][0]}"

    @property
    def urls(self) -> list[str]:
        """Client URLs of every node."""
        return [self.url(n) for n in self.NAMES]

    def start(self) -> None:
        """Start every node (logs in `<directory>/<name>.log`)."""
        for name in self.NAMES:
            with (self.directory / f"{name}.log").open("ab") as log:
                self.procs[name] = subprocess.Popen(
                    [str(nats_server_binary()), "-c", str(self.directory / f"{name}.conf")],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until JetStream answers through every node (a meta leader is elected)."""
        for url in self.urls:

            async def answers(url: str = url) -> bool:
                try:
                    nc = await nats.connect(url, connect_timeout=1, allow_reconnect=False)
                except Exception:  # noqa: BLE001 - not listening yet
                    return False
                try:
                    await nc.jetstream(timeout=1.0).account_info()
                except Exception:  # noqa: BLE001 - no meta leader yet
                    return False
                finally:
                    await nc.close()
                return True

            await wait_for(answers, timeout_s, f"JetStream through {url}", every_s=0.25)

    def kill(self, name: str) -> None:
        """SIGKILL one node (its store is kept)."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def stop(self) -> None:
        """Stop every node still running (SIGTERM, then SIGKILL after a bound)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
