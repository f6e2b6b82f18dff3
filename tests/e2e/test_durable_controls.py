"""Cancel and deadlines against real processes, and `hivebus up` restarted on its own store."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hivetest import HIVEBUS, process_env, write_config, write_script
from pydantic import BaseModel

from hivebus.console.client import HiveClient
from hivebus.console.stack import provision_all
from hivebus.contracts import (
    SubTaskFinished,
    SubTaskStarted,
    SubTaskStatus,
    TaskFinished,
    TaskStatus,
    subjects,
)
from hivebus.contracts.subjects import ControlKind
from hivebus.core import Settings, jetstream

pytestmark = pytest.mark.e2e

E2E_DIR = Path(__file__).resolve().parent
TIMINGS = {
    "HIVEBUS_ORCHESTRATOR_ACK_WAIT_S": "2",
    "HIVEBUS_WORK_ACK_WAIT_S": "5",
    "HIVEBUS_HEARTBEAT_S": "1",
}


def _plan_script(directory: Path, name: str, turns: list[dict[str, object]]) -> str:
    """A script in the configuration's folder, named as a plan must name it: relatively."""
    write_script(directory, name, turns)
    return f"scripted:{name}"


def _pauses(seconds: float, count: int) -> list[dict[str, object]]:
    """A script of `count` pauses (arguments differ, so no loop is detected), then an answer."""
    turns: list[dict[str, object]] = [
        {"tool": "pause", "args": {"seconds": round(seconds + i / 100, 2)}} for i in range(count)
    ]
    return [*turns, {"text": "done"}]


def _roles(tmp_path: Path, max_wall_s: float = 60.0) -> Path:
    """One role `slow` whose sub-tasks may pick a scripted model; returns the config path."""
    write_config(
        tmp_path,
        {
            "slow": {
                "system": "s",
                "model": write_script(tmp_path, "quick.yaml", [{"text": "quick"}]),
                "tools": ["slowtools:pause"],
                "allow_models": ["scripted:*"],
                "limits": {"max_wall_s": max_wall_s},
            }
        },
    )
    return tmp_path / "hivebus.yaml"


class _Proc:
    """A `hivebus` child process with stderr in a file, stopped for sure in `finally`."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [str(HIVEBUS), *args],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
        self.proc.wait()


@contextlib.contextmanager
def _services(
    tmp_path: Path, config: Path, url: str, *, agent: bool = True
) -> Iterator[dict[str, _Proc]]:
    """An orchestrator (and an agent for `slow`) as processes; all stopped on exit."""
    env = process_env(HIVEBUS_NATS_URL=url, PYTHONPATH=str(E2E_DIR), **TIMINGS)
    procs = {
        "orchestrator": _Proc(
            ["serve", "orchestrator", "--config", str(config)], env, tmp_path / "orchestrator.log"
        )
    }
    if agent:
        procs["agent"] = _Proc(
            ["serve", "agent", "--role", "slow", "--config", str(config)],
            env,
            tmp_path / "agent.log",
        )
    try:
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


async def _ready(procs: dict[str, _Proc], timeout_s: float = 60) -> None:
    """Wait until every process logs that its subscribers pull (start-up is seconds of CPU)."""
    async with asyncio.timeout(timeout_s):
        for proc in procs.values():
            log = proc.log
            while "waiting for messages" not in log.read_text(errors="replace"):  # noqa: ASYNC110 - another process's state
                await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _following(
    client: HiveClient, task_id: str, timeout_s: float
) -> AsyncIterator[AsyncIterator[tuple[str, BaseModel]]]:
    """A task's events, all within `timeout_s`; the follower is closed on leaving."""
    async with asyncio.timeout(timeout_s), contextlib.aclosing(client.follow(task_id)) as events:
        yield events


def _plan(task_id: str, deadline_s: float, subtasks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "goal": "g",
        "budget": {"deadline_s": deadline_s},
        "plan": {"subtasks": [{"role": "slow", "prompt": "p", **s} for s in subtasks]},
    }


async def test_cancel_from_the_cli_stops_running_and_pending_sub_tasks(
    tmp_path: Path, settings: Settings
) -> None:
    """`hivebus cancel` ends the task cancelled in seconds; pending sub-tasks never start."""
    config = _roles(tmp_path)
    long = _plan_script(tmp_path, "long.yaml", _pauses(0.5, 30))
    roots = [{"id": f"r{i}", "model": long} for i in range(2)]
    pending = [{"id": f"d{i}", "depends_on": ["r0", "r1"]} for i in range(3)]
    body = _plan("cancel-1", 60, roots + pending)
    await provision_all(settings.nats_url or "", settings, ["slow"])
    started: set[str] = set()
    finished: dict[str, SubTaskFinished] = {}
    result: TaskFinished | None = None
    cancelled_at = 0.0
    with _services(tmp_path, config, settings.nats_url or ""):
        async with HiveClient(settings.nats_url or "", settings) as client:
            await client.submit(body)
            async with _following(client, "cancel-1", 60) as events:
                async for _, event in events:
                    if isinstance(event, SubTaskStarted):
                        started.add(event.subtask_id)
                        if started == {"r0", "r1"}:
                            done = subprocess.run(
                                [str(HIVEBUS), "cancel", "cancel-1", "--reason", "stop it"],
                                env=process_env(HIVEBUS_NATS_URL=settings.nats_url or ""),
                                capture_output=True,
                                text=True,
                                timeout=30,
                                check=False,
                            )
                            assert done.returncode == 0, done.stderr
                            assert "cancel requested for cancel-1" in done.stdout
                            cancelled_at = time.monotonic()
                    elif isinstance(event, SubTaskFinished):
                        finished[event.subtask_id] = event
                    elif isinstance(event, TaskFinished):
                        result = event
    assert result is not None
    assert cancelled_at, "the cancel was never sent"
    assert time.monotonic() - cancelled_at < 5.0
    assert result.status == TaskStatus.CANCELLED
    assert result.degraded
    assert "stop it" in result.reason
    assert started == {"r0", "r1"}, "a pending sub-task started after the cancel"
    assert {s.id: s.status for s in result.subtasks} == dict.fromkeys(
        ["r0", "r1", "d0", "d1", "d2"], SubTaskStatus.CANCELLED
    )
    for root in ("r0", "r1"):
        assert finished[root].status == SubTaskStatus.CANCELLED
        assert finished[root].usage.tool_calls < 30, "the run went on after the cancel"


async def test_deadline_ends_the_task_timeout_with_what_completed(
    tmp_path: Path, settings: Settings
) -> None:
    """At its deadline a task ends `timeout`, degraded, with the outputs that completed."""
    config = _roles(tmp_path, max_wall_s=3)
    medium = _plan_script(tmp_path, "medium.yaml", _pauses(0.4, 3))
    long = _plan_script(tmp_path, "long.yaml", _pauses(0.5, 12))
    body = _plan(
        "deadline-1",
        3,
        [
            {"id": "quick"},
            {"id": "medium", "model": medium},
            {"id": "late", "model": long, "depends_on": ["medium"]},
        ],
    )
    await provision_all(settings.nats_url or "", settings, ["slow"])
    result: TaskFinished | None = None
    with _services(tmp_path, config, settings.nats_url or "") as procs:
        await _ready(procs)  # the deadline is timed from the submission, not the start-up
        async with HiveClient(settings.nats_url or "", settings) as client:
            submitted = time.monotonic()
            await client.submit(body)
            async with _following(client, "deadline-1", 30) as events:
                async for _, event in events:
                    if isinstance(event, TaskFinished):
                        result = event
    assert result is not None
    assert time.monotonic() - submitted < 10
    assert result.status == TaskStatus.TIMEOUT, result.reason
    assert result.degraded
    assert "deadline reached" in result.reason
    statuses = {s.id: s.status for s in result.subtasks}
    assert statuses["quick"] == statuses["medium"] == SubTaskStatus.COMPLETED
    assert statuses["late"] != SubTaskStatus.COMPLETED
    assert result.output == {"quick": "quick", "medium": "done"}


async def _deadline_fired(client: HiveClient, task_id: str) -> bool:
    """True once the server turned the task's scheduled deadline into a `deadline` message."""
    js = await jetstream(client.broker)
    subject = subjects.control(task_id, ControlKind.DEADLINE)
    info = await js.stream_info(subjects.CONTROL_STREAM, subjects_filter=subject)
    return bool((info.state.subjects or {}).get(subject))


async def test_deadline_fires_while_the_orchestrator_is_down(
    tmp_path: Path, settings: Settings
) -> None:
    """A deadline that falls due while no orchestrator runs still ends the task `timeout`."""
    config = _roles(tmp_path, max_wall_s=4)
    medium = _plan_script(tmp_path, "medium.yaml", _pauses(0.3, 2))
    long = _plan_script(tmp_path, "long.yaml", _pauses(0.5, 12))
    body = _plan(
        "durable-1",
        4,
        [
            {"id": "first", "model": medium},
            {"id": "second", "model": long, "depends_on": ["first"]},
        ],
    )
    url = settings.nats_url or ""
    await provision_all(url, settings, ["slow"])
    result: TaskFinished | None = None
    env = process_env(HIVEBUS_NATS_URL=url, PYTHONPATH=str(E2E_DIR), **TIMINGS)
    restarted: _Proc | None = None
    with _services(tmp_path, config, url) as procs:
        await _ready(procs)  # the 4 s deadline runs from acceptance: not the start-up's to use
        try:
            async with HiveClient(url, settings) as client:
                await client.submit(body)
                async with _following(client, "durable-1", 30) as events:
                    async for _, event in events:
                        if isinstance(event, SubTaskStarted):
                            break  # accepted and dispatched: the deadline is scheduled
                procs["orchestrator"].signal(signal.SIGKILL)
                procs["orchestrator"].proc.wait()
                async with asyncio.timeout(15):
                    while not await _deadline_fired(client, "durable-1"):  # noqa: ASYNC110 - server-side state
                        await asyncio.sleep(0.2)
                restarted = _Proc(
                    ["serve", "orchestrator", "--config", str(config)],
                    env,
                    tmp_path / "orchestrator-2.log",
                )
                async with _following(client, "durable-1", 30) as events:
                    async for _, event in events:
                        if isinstance(event, TaskFinished):
                            result = event
        finally:
            if restarted is not None:
                restarted.stop()
    assert procs["orchestrator"].proc.returncode == -signal.SIGKILL
    assert result is not None
    assert result.status == TaskStatus.TIMEOUT, result.reason
    assert {s.id: s.status for s in result.subtasks}["first"] == SubTaskStatus.COMPLETED
    assert {s.id: s.status for s in result.subtasks}["second"] != SubTaskStatus.COMPLETED


async def test_the_deadline_of_a_task_that_ended_changes_nothing(
    tmp_path: Path, settings: Settings
) -> None:
    """Every task's deadline comes due: one that completed before it stays completed, once."""
    config = _roles(tmp_path, max_wall_s=2)
    url = settings.nats_url or ""
    await provision_all(url, settings, ["slow"])
    result: TaskFinished | None = None
    with _services(tmp_path, config, url) as procs:
        await _ready(procs)
        async with HiveClient(url, settings) as client:
            await client.submit(_plan("early-1", 2, [{"id": "quick"}]))
            async with _following(client, "early-1", 30) as events:
                async for _, event in events:
                    if isinstance(event, TaskFinished):
                        result = event
            assert result is not None
            assert result.status == TaskStatus.COMPLETED, result.reason
            js = await jetstream(client.broker)
            durable = subjects.orchestrator_control_consumer(ControlKind.DEADLINE)
            async with asyncio.timeout(20):
                while not await _deadline_fired(client, "early-1"):  # noqa: ASYNC110 - server-side state
                    await asyncio.sleep(0.2)
                while True:  # the orchestrator took the deadline and settled it
                    info = await js.consumer_info(subjects.CONTROL_STREAM, durable)
                    if info.num_pending == 0 and info.num_ack_pending == 0:
                        break
                    await asyncio.sleep(0.2)
            meta, _, stored = await client.status("early-1")
            finished = subjects.event("early-1", subjects.EventKind.TASK_FINISHED)
            events_info = await js.stream_info(subjects.EVENTS_STREAM, subjects_filter=finished)
    assert meta is not None
    assert meta.status == TaskStatus.COMPLETED
    assert meta.ending is None
    assert stored == result
    assert (events_info.state.subjects or {}).get(finished) == 1
    assert "Traceback" not in procs["orchestrator"].log.read_text(errors="replace")


async def test_deadline_with_nothing_completed_is_dead_lettered(
    tmp_path: Path, settings: Settings
) -> None:
    """A task whose deadline passes before anything completed goes to the DLQ (why=deadline)."""
    config = _roles(tmp_path, max_wall_s=2)
    body = _plan("deadline-dlq", 2, [{"id": "never"}, {"id": "after", "depends_on": ["never"]}])
    url = settings.nats_url or ""
    await provision_all(url, settings, ["slow"])
    result: TaskFinished | None = None
    with _services(tmp_path, config, url, agent=False):  # nobody serves `slow`: nothing runs
        async with HiveClient(url, settings) as client:
            await client.submit(body)
            async with _following(client, "deadline-dlq", 30) as events:
                async for _, event in events:
                    if isinstance(event, TaskFinished):
                        result = event
            letters = [d for _, d in await client.dead_letters() if d.task_id == "deadline-dlq"]
    assert result is not None
    assert result.status == TaskStatus.TIMEOUT
    assert result.output is None
    assert [d.why for d in letters] == [subjects.DeadLetterKind.DEADLINE.value]
    assert letters[0].original["task_id"] == "deadline-dlq"
    assert "deadline reached" in letters[0].errors[0]


def _stop_up(up: _Proc, data_dir: Path) -> None:
    """Stop `up`; if it had to be killed, also end the embedded server it left in `data_dir`."""
    up.stop()
    conf = str(data_dir / "nats-server.conf").encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError, ProcessLookupError):
            if conf in cmdline.read_bytes():
                os.kill(int(cmdline.parent.name), signal.SIGKILL)


def _up(config: Path, data_dir: Path, log: Path) -> tuple[_Proc, str]:
    """Start `hivebus up --data-dir` and return it with the URL it prints when it is up."""
    env = process_env(PYTHONPATH=str(E2E_DIR), COLUMNS="200", **TIMINGS)
    up = _Proc(["up", "--config", str(config), "--data-dir", str(data_dir)], env, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and up.proc.poll() is None:
        found = re.search(r"hivebus is up on (nats://[\d.]+:\d+)", log.read_text(errors="replace"))
        if found:
            return up, found[1]
        time.sleep(0.1)
    _stop_up(up, data_dir)
    pytest.fail(f"`hivebus up` did not come up:\n{log.read_text(errors='replace')[-2000:]}")


def test_a_task_survives_restarting_up_on_the_same_data_dir(tmp_path: Path) -> None:
    """SIGINT to `hivebus up` mid-task, then `up --data-dir` again: the same task finishes."""
    config = _roles(tmp_path)
    long = _plan_script(tmp_path, "long.yaml", _pauses(0.3, 4))
    # The last sub-task outlasts the first `up`'s shutdown (its dashboard stops first), so
    # the task is still running when that `up` is gone.
    longer = _plan_script(tmp_path, "longer.yaml", _pauses(0.5, 8))
    body = _plan(
        "up-restart",
        120,
        [{"id": f"r{i}", "model": long} for i in range(3)]
        + [{"id": "end", "model": longer, "depends_on": ["r0", "r1", "r2"]}],
    )
    data_dir = tmp_path / "data"
    settings = Settings()

    async def submit_and_wait_for_progress(url: str) -> None:
        async with HiveClient(url, settings) as client:
            await client.submit(body)
            async with _following(client, "up-restart", 30) as events:
                async for _, event in events:
                    if isinstance(event, SubTaskFinished):
                        return

    async def wait_for_end(url: str) -> TaskFinished:
        async with (
            HiveClient(url, settings) as client,
            _following(client, "up-restart", 60) as events,
        ):
            async for _, event in events:
                if isinstance(event, TaskFinished):
                    return event
        raise AssertionError("the task never finished")

    first, url = _up(config, data_dir, tmp_path / "up-1.log")
    try:
        asyncio.run(submit_and_wait_for_progress(url))
        first.signal(signal.SIGINT)
        first.proc.wait(timeout=30)
    finally:
        _stop_up(first, data_dir)
    first_gone = datetime.now(UTC)
    second, url_again = _up(config, data_dir, tmp_path / "up-2.log")
    try:
        result = asyncio.run(wait_for_end(url_again))
    finally:
        second.signal(signal.SIGINT)
        _stop_up(second, data_dir)
    assert first.proc.returncode == 0
    assert result.task_id == "up-restart"
    assert result.ts > first_gone, "the task had finished before the first `up` stopped"
    assert result.status == TaskStatus.COMPLETED, result.reason
    assert [s.status for s in result.subtasks] == [SubTaskStatus.COMPLETED] * 4
