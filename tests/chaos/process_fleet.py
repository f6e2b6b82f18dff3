"""The agent and orchestrator processes of one chaos test: spawn, kill, pause, always clean up.

Every process runs `hivebus serve ...` in its own session (so a signal reaches its whole
group), with the bus timings of the `Settings` the `Fleet` was given, which should be the
ones the test provisioned with: each `hivebus serve` provisions again at start-up, consumers
are configured from its settings, and whichever process provisions last wins. Each process
logs JSON to its own file in the test's `logs` directory, so a test can read what it said.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from hivetest import HIVEBUS, process_env
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from hivebus.contracts import subjects
from hivebus.core import Settings

CHAOS_DIR = Path(__file__).resolve().parent
STOP_TIMEOUT_S = 10.0


def chaos_settings(url: str, *, max_deliver: int = 20) -> Settings:
    """Small timings: a lost worker's sub-task is redelivered about 2 s after its last beat."""
    return Settings(
        nats_url=url,
        work_ack_wait_s=2.0,
        heartbeat_s=0.5,
        work_max_deliver=max_deliver,
        orchestrator_ack_wait_s=2.0,
    )


async def wait_until(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 20.0
) -> None:
    """Poll `check()` until it is true; raise `TimeoutError` naming `what` if it never is."""
    try:
        async with asyncio.timeout(timeout_s):
            while not await check():  # noqa: ASYNC110 - state of another process; no event here
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise TimeoutError(f"{what} did not happen within {timeout_s:g}s") from None


async def read_events(js: JetStreamContext, task_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every event of a task stored in EVENTS so far, as `(kind, body)`, oldest first.

    An ordered consumer needs no acks, so it reads any number of events, whatever the ack
    window (`test_follow_long_task.py` pins that `HiveClient.follow` does too). The task must
    have at least one event: with none, this raises a nats `TimeoutError` after 10 s.
    """
    sub = await js.subscribe(
        subjects.events_of(task_id), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )
    events: list[tuple[str, dict[str, Any]]] = []
    try:
        while True:
            msg = await sub.next_msg(timeout=10)
            events.append((msg.subject.rsplit(".", 1)[-1], json.loads(msg.data)))
            if msg.metadata.num_pending == 0:
                return events
    finally:
        await sub.unsubscribe()


class Fleet:
    """Service processes sharing one configuration file and one set of settings."""

    def __init__(self, config: Path, settings: Settings, logs: Path) -> None:
        """Nothing starts until `agent()` or `orchestrator()`."""
        self.config = config
        self.settings = settings
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []
        self.log_of: dict[int, Path] = {}

    def env(self) -> dict[str, str]:
        """The environment of every child: the server, the timings, the test tools' path."""
        s = self.settings
        return process_env(
            HIVEBUS_NATS_URL=s.nats_url or "",
            HIVEBUS_WORK_ACK_WAIT_S=str(s.work_ack_wait_s),
            HIVEBUS_WORK_MAX_DELIVER=str(s.work_max_deliver),
            HIVEBUS_HEARTBEAT_S=str(s.heartbeat_s),
            HIVEBUS_ORCHESTRATOR_ACK_WAIT_S=str(s.orchestrator_ack_wait_s),
            HIVEBUS_LOG_LEVEL="info",
            PYTHONPATH=str(CHAOS_DIR),
        )

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}-{len(self.processes)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(HIVEBUS), "serve", *args, "--config", str(self.config)],
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(proc)
        self.log_of[proc.pid] = log
        return proc

    def agent(self, role: str) -> subprocess.Popen[bytes]:
        """Start one worker of `role`."""
        return self._spawn(f"agent-{role}", "agent", "--role", role)

    def orchestrator(self) -> subprocess.Popen[bytes]:
        """Start one orchestrator."""
        return self._spawn("orchestrator", "orchestrator")

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        """Everything `proc` has logged so far."""
        return self.log_of[proc.pid].read_text(encoding="utf-8", errors="replace")

    def ready(self, proc: subprocess.Popen[bytes]) -> bool:
        """Whether `proc` has connected and its subscribers are pulling messages."""
        return proc.poll() is None and "waiting for messages" in self.log(proc)

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the process group and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    @staticmethod
    def signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        """Send `sig` (SIGSTOP, SIGCONT, ...) to the process group."""
        os.killpg(proc.pid, sig)

    def stop_all(self) -> None:
        """Stop every process still running: SIGTERM (and SIGCONT, if stopped), then SIGKILL."""
        running = [p for p in self.processes if p.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
                os.killpg(proc.pid, signal.SIGCONT)
        for proc in running:
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill(proc)

    def __enter__(self) -> Self:
        """Use as `with Fleet(...) as fleet:`; every process is stopped on the way out."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop every process, whatever happened."""
        self.stop_all()
