"""Services for the bus chaos tests: `hivebus serve` processes, their logs, probes of the bus.

Services run as `hivebus serve ...` with JSON info logs (their stderr) captured to files, so
a test that fails can say what a service was doing; `BusProbe.events` reads a task's whole
history from EVENTS after the fact, independently of what a follower saw while servers were
dying.
"""

from __future__ import annotations

import asyncio
import json
import os
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
from hivebus.core import Settings

TESTS = Path(__file__).resolve().parent.parent
TOOLS_DIR = TESTS / "e2e"
"""Where `slowtools` lives: the child processes import it through PYTHONPATH."""


def service_env(url: str, **extra: str) -> dict[str, str]:
    """Child environment: the server URL, short bus timings, JSON info logs, the test tools.

    `extra` is added last, so it may replace any of these (`PYTHONPATH` too).
    """
    defaults = {
        "HIVEBUS_NATS_URL": url,
        "HIVEBUS_LOG_LEVEL": "info",
        "PYTHONPATH": str(TOOLS_DIR),
        "HIVEBUS_ORCHESTRATOR_ACK_WAIT_S": "2",
        "HIVEBUS_WORK_ACK_WAIT_S": "5",
        "HIVEBUS_HEARTBEAT_S": "1",
    }
    return process_env(**{**defaults, **extra})


def settings_of(env: dict[str, str]) -> Settings:
    """The settings a service started with `env` reads (to provision and connect alike)."""
    prefix = "HIVEBUS_"
    fields = {k.removeprefix(prefix).lower(): v for k, v in env.items() if k.startswith(prefix)}
    return Settings.model_validate(fields)


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


def layered_plan(
    task_id: str, role: str, widths: list[int], prompt: Callable[[int], str] = lambda _: "p"
) -> dict[str, Any]:
    """A submission whose sub-tasks form layers; each depends on two of the layer before.

    A sub-task's prompt is `prompt(layer)` (a scripted model can answer by layer).
    """
    subtasks: list[dict[str, Any]] = []
    previous: list[str] = []
    for layer, width in enumerate(widths):
        current = [f"l{layer}n{i}" for i in range(width)]
        for i, sid in enumerate(current):
            spec: dict[str, Any] = {"id": sid, "role": role, "prompt": prompt(layer)}
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

    def __init__(self, url: str | list[str], user: str | None = None, password: str = "") -> None:
        """Connect lazily to `url` (one URL or a cluster's list), as `user` when given."""
        self.url = url
        self.credentials: dict[str, str] = (
            {"user": user, "password": password, "inbox_prefix": f"_INBOX_{user}"} if user else {}
        )
        self.nc: Any = None

    async def __aenter__(self) -> Self:
        """Connect, then reconnect forever (bounded by the caller's timeouts)."""
        self.nc = await nats.connect(
            self.url,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
            connect_timeout=2,
            **self.credentials,
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
