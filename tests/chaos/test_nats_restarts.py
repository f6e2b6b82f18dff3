"""The only nats-server SIGKILLed and restarted (same port, same store) again and again mid-task."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from chaos_bus import (
    BusProbe,
    Service,
    agent,
    layered_plan,
    log_events,
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

TASK = "chaos-restarts"
RESTARTS = 5
PROGRESS_S = (0.5, 1.0)
"""Work allowed (a random span) between a restart's first observed progress and the next kill."""
RECOVERY_TIMEOUT_S = 25.0
"""Bound on a restart's recovery: longer than the work ack wait (5 s) plus reconnect backoff."""
OUTAGE_S = 7.5
"""Longer than a JetStream request's 5 s timeout after the runs' next budget-ledger call."""


async def _kill_and_restart(
    server: EmbeddedNats, probe: BusProbe, services: list[Service], jitter: random.Random
) -> int:
    """SIGKILL and restart the server RESTARTS times, each after the services made progress."""

    async def finished() -> int:
        return await probe.count(TASK, EventKind.SUBTASK_FINISHED) or 0

    async def task_done() -> bool:
        return bool(await probe.count(TASK, EventKind.TASK_FINISHED))

    async def progressed_past(mark: int) -> bool:
        return await finished() > mark or await task_done()

    await wait_for(lambda: progressed_past(0), 30, "first sub-task finished")
    restarts = 0
    while restarts < RESTARTS and not await task_done():
        await asyncio.sleep(jitter.uniform(*PROGRESS_S))
        mark = await finished()
        server.kill()
        await server.start()
        restarts += 1
        try:
            await wait_for(
                lambda m=mark: progressed_past(m),  # type: ignore[misc]
                RECOVERY_TIMEOUT_S,
                f"progress after restart {restarts} (finished before: {mark})",
            )
        except TimeoutError as exc:
            tails = "\n".join(s.tail() for s in services)
            pytest.fail(f"services did not recover: {exc}\n{tails}")
    await wait_for(task_done, 60, "task_finished")
    return restarts


async def test_task_survives_repeated_nats_server_kills(
    tmp_path: Path, nats_server: EmbeddedNats, settings: Settings
) -> None:
    """Each sub-task completes exactly once and no result is lost across five server SIGKILLs."""
    model = write_script(
        tmp_path, "slow.yaml", [{"tool": "pause", "args": {"seconds": 0.3}}, {"text": "ok"}]
    )
    write_config(
        tmp_path,
        {"slow": {"system": "s", "model": model, "tools": ["slowtools:pause"], "concurrency": 4}},
    )
    await provision_all(nats_server.url, settings, ["slow"])
    body = layered_plan(TASK, "slow", [10, 14, 14, 10, 2])
    ids = {s["id"] for s in body["plan"]["subtasks"]}
    env = service_env(nats_server.url)
    logs = tmp_path / "logs"
    services: list[Service] = [
        agent(tmp_path / "hivebus.yaml", "slow", env, logs, "agent"),
        orchestrator(tmp_path / "hivebus.yaml", env, logs, "orchestrator"),
    ]
    started = time.monotonic()
    try:
        async with HiveClient(nats_server.url, settings) as client:
            await client.submit(body)
        async with BusProbe(nats_server.url) as probe:
            jitter = random.Random(7)
            restarts = await _kill_and_restart(nats_server, probe, services, jitter)
            events = await probe.events(TASK)
    finally:
        for service in services:
            service.stop()

    results = [event for kind, event in events if kind == "subtask_finished"]
    per_subtask = Counter(r["subtask_id"] for r in results)
    lost = sorted(ids - {r["subtask_id"] for r in results if r["status"] == "completed"})
    duplicated = sorted(sid for sid, n in per_subtask.items() if n > 1)
    final = [event for kind, event in events if kind == "task_finished"]
    print(  # noqa: T201 - the chaos summary line is this test's report
        f"CHAOS nats-restarts: subtasks={len(ids)} restarts={restarts} "
        f"lost={len(lost)} duplicated={len(duplicated)} "
        f"runs_interrupted={len(log_events(services[0], 'message_retry'))} "
        f"seconds={time.monotonic() - started:.1f}"
    )
    assert restarts >= RESTARTS, f"the task finished after only {restarts} restarts"
    assert len(final) == 1
    assert final[0]["status"] == "completed", final[0]["reason"]
    summary = Counter(s["id"] for s in final[0]["subtasks"] if s["status"] == "completed")
    assert set(summary) == ids
    assert set(summary.values()) == {1}
    assert lost == [], f"sub-tasks without a stored completed result: {lost}"
    assert duplicated == [], f"sub-tasks with more than one stored result: {duplicated}"


async def test_runs_waiting_on_the_budget_ledger_survive_a_long_outage(
    tmp_path: Path, nats_server: EmbeddedNats, settings: Settings
) -> None:
    """A server down past a request timeout while runs settle a model call fails no sub-task."""
    model = write_script(tmp_path, "thinking.yaml", [{"text": "ok", "delay_s": 2.0}])
    write_config(tmp_path, {"slow": {"system": "s", "model": model, "concurrency": 4}})
    await provision_all(nats_server.url, settings, ["slow"])
    body = layered_plan("outage", "slow", [4])
    env = service_env(nats_server.url)
    logs = tmp_path / "logs"
    services = [
        agent(tmp_path / "hivebus.yaml", "slow", env, logs, "agent"),
        orchestrator(tmp_path / "hivebus.yaml", env, logs, "orchestrator"),
    ]
    try:
        async with HiveClient(nats_server.url, settings) as client:
            await client.submit(body)
        async with BusProbe(nats_server.url) as probe:

            async def all_thinking() -> bool:
                return (await probe.count("outage", EventKind.SUBTASK_STARTED) or 0) == 4

            async def task_done() -> bool:
                return bool(await probe.count("outage", EventKind.TASK_FINISHED))

            await wait_for(all_thinking, 30, "four runs started")
            nats_server.kill()  # every run is inside its 2 s model call
            await asyncio.sleep(OUTAGE_S)  # the outage is the fault injected, not a wait
            await nats_server.start()
            await wait_for(task_done, 40, "task_finished after the outage")
            events = await probe.events("outage")
    finally:
        for service in services:
            service.stop()
    final = [event for kind, event in events if kind == "task_finished"]
    retried = log_events(services[0], "message_retry")
    print(  # noqa: T201 - the chaos summary line is this test's report
        f"CHAOS nats-outage: subtasks=4 outage_s={OUTAGE_S} runs_retried={len(retried)} "
        f"status={final[0]['status']}"
    )
    assert retried, "no run met the outage: the fault was not injected where intended"
    assert final[0]["status"] == "completed", final[0]["reason"]
