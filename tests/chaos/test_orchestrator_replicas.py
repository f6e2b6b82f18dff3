"""Two orchestrator replicas share the work; one is SIGKILLed while dispatch is busy."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from chaos_bus import (
    BusProbe,
    Service,
    agent,
    layered_plan,
    orchestrator,
    service_env,
    wait_for,
)
from hivetest import write_config, write_script

from hivebus.console.client import HiveClient
from hivebus.console.stack import provision_all
from hivebus.contracts.subjects import EventKind
from hivebus.core import EmbeddedNats, Settings

pytestmark = pytest.mark.chaos

TASK = "chaos-replicas"
WIDTHS = [10, 80, 10]
"""Ten roots fan out to eighty sub-tasks (each needs two roots), gathered by ten more."""
KILL_AFTER = WIDTHS[0] + 5
"""Dispatches stored in WORK before the kill: the roots and the first few fanned-out ones."""


def _in_flight(service: Service) -> int:
    """Handlers a killed orchestrator had begun and not finished (FastStream's info lines)."""
    lines = service.log.read_text(encoding="utf-8", errors="replace").splitlines()
    received = sum(line.endswith(":Received") for line in lines)
    processed = sum(line.endswith(":Processed") for line in lines)
    return received - processed


async def test_orchestrator_replica_killed_during_dispatch(
    tmp_path: Path, nats_server: EmbeddedNats, settings: Settings
) -> None:
    """Every sub-task is dispatched and started exactly once when a replica dies mid-dispatch."""
    model = write_script(
        tmp_path, "slow.yaml", [{"tool": "pause", "args": {"seconds": 0.2}}, {"text": "ok"}]
    )
    write_config(
        tmp_path,
        {"slow": {"system": "s", "model": model, "tools": ["slowtools:pause"], "concurrency": 6}},
    )
    config = tmp_path / "hivebus.yaml"
    url = nats_server.url
    await provision_all(url, settings, ["slow"])
    env = service_env(url)
    logs = tmp_path / "logs"
    victim = orchestrator(config, env, logs, "orchestrator-a")
    services = [
        victim,
        orchestrator(config, env, logs, "orchestrator-b"),
        agent(config, "slow", env, logs, "agent-1"),
        agent(config, "slow", env, logs, "agent-2"),
    ]
    body = layered_plan(TASK, "slow", WIDTHS)
    total = len(body["plan"]["subtasks"])
    started = time.monotonic()
    try:
        async with HiveClient(url, settings) as client:
            await client.submit(body)
        async with BusProbe(url) as probe:

            async def busy() -> bool:
                return (await probe.dispatched() or 0) >= KILL_AFTER

            async def task_done() -> bool:
                return bool(await probe.count(TASK, EventKind.TASK_FINISHED))

            await wait_for(busy, 40, f"{KILL_AFTER} dispatches", every_s=0.02)
            victim.kill()
            in_flight = _in_flight(victim)
            try:
                await wait_for(task_done, 50, "task_finished after an orchestrator was killed")
            except TimeoutError as exc:
                pytest.fail(f"{exc}\n" + "\n".join(s.tail() for s in services))
            events = await probe.events(TASK)
            dispatches = await probe.dispatched() or 0
    finally:
        for service in services:
            service.stop()

    attempts: defaultdict[str, set[int]] = defaultdict(set)
    starts: Counter[str] = Counter()
    for kind, event in events:
        if kind == "subtask_started":
            starts[event["subtask_id"]] += 1
            attempts[event["subtask_id"]].add(event["attempt"])
    twice = sorted(s for s in starts if starts[s] > 1 or len(attempts[s]) > 1)
    final = [event for kind, event in events if kind == "task_finished"]
    print(  # noqa: T201 - the chaos summary line is this test's report
        f"CHAOS orchestrator-replicas: subtasks={total} killed=1 "
        f"dispatched_twice={len(twice) + max(0, dispatches - total)} "
        f"handlers_in_flight_at_kill={in_flight} seconds={time.monotonic() - started:.1f}"
    )
    assert victim.proc.returncode is not None
    assert len(final) == 1
    assert final[0]["status"] == "completed", final[0]["reason"]
    assert dispatches == total, f"WORK stored {dispatches} dispatches for {total} sub-tasks"
    assert set(starts) == {s["id"] for s in body["plan"]["subtasks"]}
    assert twice == [], f"started more than once: {twice}"
