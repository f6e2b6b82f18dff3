"""A 3-node JetStream cluster (the shipped configuration, on loopback) losing a node mid-task."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from chaos_bus import BusProbe, Service, agent, layered_plan, orchestrator, service_env, wait_for
from hivetest import write_config, write_script
from loopback_cluster import SHIPPED_CLUSTER, Cluster, localize

from hivebus.console.client import HiveClient
from hivebus.contracts import subjects
from hivebus.contracts.subjects import EventKind
from hivebus.core import EmbeddedNats, Settings, jetstream, new_broker
from hivebus.core.embedded import free_port, nats_server_binary

pytestmark = pytest.mark.chaos

TASK = "chaos-cluster"


def test_shipped_cluster_configs_pass_nats_server_check(tmp_path: Path) -> None:
    """Every shipped node configuration passes `nats-server -t` with local paths and hosts."""
    ports = {name: (14222 + i, 16222 + i, 18222 + i) for i, name in enumerate(Cluster.NAMES)}
    for name in Cluster.NAMES:
        shipped = (SHIPPED_CLUSTER / f"{name}.conf").read_text(encoding="utf-8")
        conf = tmp_path / f"{name}.conf"
        conf.write_text(localize(shipped, ports, name, tmp_path / name), encoding="utf-8")
        checked = subprocess.run(
            [str(nats_server_binary()), "-c", str(conf), "-t"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert checked.returncode == 0, f"{name}: {checked.stdout}{checked.stderr}"
        assert "sync_interval: always" in shipped


async def test_a_comma_separated_server_list_connects(nats_server: EmbeddedNats) -> None:
    """A comma-separated server list connects even when its first server is down."""
    broker = new_broker(f"nats://127.0.0.1:{free_port()}, {nats_server.url}", "probe", Settings())
    try:
        await (await jetstream(broker)).account_info()
    finally:
        await broker.stop()


async def test_task_completes_when_a_cluster_node_is_killed(tmp_path: Path) -> None:
    """With R3 streams and buckets, SIGKILL of the task-state leader mid-task loses nothing."""
    cluster = Cluster(tmp_path / "cluster")
    services: list[Service] = []
    started = time.monotonic()
    cluster.start()
    try:
        await cluster.wait_ready()
        url = ",".join(cluster.urls)  # every node, as a deployment would name them
        settings = Settings(
            nats_url=url,
            replicas=3,
            orchestrator_ack_wait_s=2.0,
            work_ack_wait_s=5.0,
            heartbeat_s=1.0,
        )
        await cluster.provision(settings, ["slow"])
        async with BusProbe(cluster.urls) as probe:
            # The victim leads the `tasks` bucket (task state and the budget ledger): its
            # loss stalls that bucket for an election, the hardest node to lose.
            victim = await probe.leader(f"KV_{subjects.TASKS_BUCKET}")
            model = write_script(
                tmp_path, "slow.yaml", [{"tool": "pause", "args": {"seconds": 0.3}}, {"text": "ok"}]
            )
            write_config(
                tmp_path, {"slow": {"system": "s", "model": model, "tools": ["slowtools:pause"]}}
            )
            env = service_env(url, HIVEBUS_REPLICAS="3")
            logs = tmp_path / "logs"
            services = [
                agent(tmp_path / "hivebus.yaml", "slow", env, logs, "agent"),
                orchestrator(tmp_path / "hivebus.yaml", env, logs, "orchestrator"),
            ]
            body = layered_plan(TASK, "slow", [8, 10, 8, 4])
            total = len(body["plan"]["subtasks"])
            async with HiveClient(url, settings) as client:
                await client.submit(body)

            async def progressed() -> bool:
                return (await probe.count(TASK, EventKind.SUBTASK_FINISHED) or 0) >= 6

            async def task_done() -> bool:
                return bool(await probe.count(TASK, EventKind.TASK_FINISHED))

            await wait_for(progressed, 40, "six sub-tasks finished")
            cluster.kill(victim)
            try:
                await wait_for(task_done, 50, f"task_finished after {victim} was killed")
            except TimeoutError as exc:
                pytest.fail(f"{exc}\n" + "\n".join(s.tail() for s in services))
            events = await probe.events(TASK)
    finally:
        for service in services:
            service.stop()
        cluster.stop()
    final = [event for kind, event in events if kind == "task_finished"]
    assert len(final) == 1
    completed = [s for s in final[0]["subtasks"] if s["status"] == "completed"]
    print(  # noqa: T201 - the chaos summary line is this test's report
        f"CHAOS cluster: nodes=3 killed=1 subtasks={total} completed={len(completed)} "
        f"victim={victim} (tasks leader) seconds={time.monotonic() - started:.1f}"
    )
    assert final[0]["status"] == "completed", final[0]["reason"]
    assert len(completed) == total
    stored = {e["subtask_id"] for k, e in events if k == "subtask_finished"}
    assert stored == {s["id"] for s in body["plan"]["subtasks"]}, "a result was lost"
