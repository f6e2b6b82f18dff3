"""The 3-node cluster under rolling faults: twenty, one node at a time, while a task runs.

Nineteen SIGKILLs (four of the task-state leader, kept down until the others have taken over
what it led; the rest of the node that came back last, restarted at once) and one SIGSTOP of
the node leading most, held past the nats-server election timeout. After each fault the loop
waits until the cluster has converged again (`Convergence`: every node healthy, one agreed
leader per raft group, every replica current). The task's ten layers wait at gates that the
loop opens as faults are done, the last one after the last fault, so the task cannot end
with fewer faults, and runs are in flight at every fault.

With the shipped NATS identities on every node: each service connects as its own identity
(the orchestrators as `orchestrator`, the agents as `agent-gated`), the topology is created as
`provisioner` and the task submitted as `client`; only the test's probe has a user of its own
that may read everything.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chaos_bus import (
    BusProbe,
    Service,
    agent,
    layered_plan,
    log_events,
    orchestrator,
    service_env,
    settings_of,
    wait_for,
)
from chaos_tools import Ledger, open_gate
from cluster_convergence import Convergence
from hivetest import write_config, write_script
from loopback_cluster import Cluster

from hivebus.console.client import HiveClient
from hivebus.console.secure import LocalIdentities
from hivebus.contracts import SubTaskState, SubTaskStatus, TaskFinished, TaskMeta, TaskStatus
from hivebus.contracts.subjects import EventKind
from hivebus.core.identities import Identity, agent_identity_name, render_authorization

# Elections, not CPU, set the pace: about 100 s, most of it the faults' recoveries.
pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

TASK = "chaos-rolling"
ROLE = "gated"
LAYERS, WIDTH = 10, 30
FAULTS = 20
PAUSE_AT = 10
"""The fault that is a SIGSTOP; the others are SIGKILLs."""
LEADER_EVERY = 5
"""Faults 1, 6, 11, 16 kill the task-state leader: each costs an election (`RollingFaults`)."""
ELECTION_TIMEOUT_S = 9.0
"""nats-server's longest raft election timeout (`maxElectionTimeoutDefault` in raft.go)."""
PAUSE_S = ELECTION_TIMEOUT_S + 1.0
AGENTS, CONCURRENCY, ORCHESTRATORS = 2, 16, 2
CONVERGE_TIMEOUT_S = 30.0
"""Bound on one fault's recovery: an election (up to 9 s), twice, and catching up."""
CHAOS_DIR = Path(__file__).resolve().parent
"""Where `chaos_tools` lives: the agents import it through PYTHONPATH."""


PROBE = Identity(name="probe", purpose="the test's own reads", publish=(">",), subscribe=(">",))
PROBE_PASSWORD = "probe-only-in-this-test"  # noqa: S105 - a test server's


def rolling_cluster(directory: Path, secured: LocalIdentities) -> Cluster:
    """The shipped 3-node cluster on loopback, with the shipped identities and the probe."""
    auth = render_authorization(
        [*secured.users, PROBE],
        lambda user: f'"{secured.passwords.get(user.name, PROBE_PASSWORD)}"',
    )
    probe = {"user": PROBE.name, "password": PROBE_PASSWORD, "inbox_prefix": "_INBOX_probe"}
    return Cluster(directory, include=auth, credentials=probe)


def service_environment(url: str, user: str = "", password: str = "") -> dict[str, str]:
    """One service's environment: every node's URL, R3, short bus timings, its identity."""
    identity = (
        {"HIVEBUS_NATS_USER": user, "HIVEBUS_NATS_PASSWORD": password, "HIVEBUS_PROVISION": "false"}
        if user
        else {}
    )
    return service_env(
        url,
        HIVEBUS_REPLICAS="3",
        HIVEBUS_WORK_MAX_DELIVER="20",
        PYTHONPATH=str(CHAOS_DIR),
        **identity,
    )


def gate_after(layer: int) -> int:
    """The fault after which a layer's gate opens: layer 0 at once, the last after the last."""
    return FAULTS * layer // (LAYERS - 1)


def _marker(layer: int) -> str:
    return f"[layer {layer}]"


def _role(directory: Path) -> dict[str, Any]:
    """Wait at the layer's gate, append to the ledger once, answer."""
    usage = {"input_tokens": 10, "output_tokens": 5}
    cases = [
        {
            "when": _marker(layer),
            "turns": [
                {"tool": "wait_gate", "args": {"gate": str(layer)}, "usage": usage},
                {"tool": "ledger_append", "args": {"entry": "e"}, "usage": usage},
                {"text": "recorded", "usage": usage},
            ],
        }
        for layer in range(LAYERS)
    ]
    return {
        "system": "s",
        "model": write_script(directory, "gated.yaml", {"cases": cases}),
        "tools": ["chaos_tools:wait_gate", "chaos_tools:ledger_append"],
        "tiers": ["read", "write_safe"],
        "concurrency": CONCURRENCY,
    }


@dataclass(frozen=True)
class Fault:
    """One fault done, and what it hit."""

    number: int
    kind: str
    node: str
    led: int
    """Raft groups the node led when it was hit."""
    in_flight: int
    """Runs started (or resumed) and not finished when it was hit."""
    recovered_s: float
    """From the fault until the cluster had converged again."""


class RollingFaults:
    """Hits one node at a time and waits, after each fault, until the cluster has converged.

    Every `LEADER_EVERY`th fault SIGKILLs the task-state leader and keeps it down until the
    other two have elected leaders for all it led (an election: seconds); the pause does the
    same with SIGSTOP. The others SIGKILL the node leading fewest groups and restart it at
    once (a crash loop, about a second each, as nothing waits for an election).
    """

    def __init__(self, cluster: Cluster, probe: BusProbe, workspace: Path) -> None:
        """Fault `cluster`; count runs through `probe`; open gates in `workspace`."""
        self.cluster = cluster
        self.convergence = Convergence(cluster)
        self.probe = probe
        self.workspace = workspace
        self.done: list[Fault] = []

    async def run(self) -> None:
        """Do every fault, opening each layer's gate after its fault."""
        for number in range(1, FAULTS + 1):
            await self._one(number)
            for layer in range(1, LAYERS):
                if gate_after(layer) == number:
                    open_gate(self.workspace, str(layer))

    async def _in_flight(self) -> int:
        counts: list[int | None] = []

        async def answered() -> bool:
            kinds = (EventKind.SUBTASK_STARTED, EventKind.SUBTASK_FINISHED)
            counts[:] = [await self.probe.count(TASK, kind) for kind in kinds]
            return None not in counts

        await wait_for(answered, 10, "EVENTS counted", every_s=0.2)
        started, finished = counts
        return (started or 0) - (finished or 0)

    async def _one(self, number: int) -> None:
        names = self.cluster.NAMES
        views = await self.convergence.views(names)
        led = {node: {g for g, v in views[node].items() if v.leader == node} for node in names}
        last = self.done[-1].node if self.done else ""
        in_flight = await self._in_flight()
        began = time.monotonic()
        if number == PAUSE_AT:
            kind, node = "pause", max(names, key=lambda n: len(led[n]))
            self.cluster.pause(node)
            try:
                await asyncio.sleep(PAUSE_S)  # the outage is the fault injected, not a wait
                await self._taken_over(node, led[node])
            finally:
                self.cluster.resume(node)
        elif number % LEADER_EVERY == 1:
            kind, node = "kill-leader", views[names[0]]["stream KV_tasks"].leader
            self.cluster.kill(node)
            await self._taken_over(node, led[node])
            self.cluster.start_node(node)
        else:
            kind, node = "kill", min(names, key=lambda n: (len(led[n]), n != last))
            self.cluster.kill(node)
            self.cluster.start_node(node)
        await self.convergence.wait(CONVERGE_TIMEOUT_S, f"after fault {number} ({kind} {node})")
        recovered = time.monotonic() - began
        self.done.append(Fault(number, kind, node, len(led[node]), in_flight, recovered))

    async def _taken_over(self, node: str, led: set[str]) -> None:
        """Wait until the other nodes lead every raft group `node` led."""
        others = [n for n in self.cluster.NAMES if n != node]
        what = f"{others} leading what {node} led"
        await self.convergence.wait(CONVERGE_TIMEOUT_S, what, nodes=others, groups=led)


@dataclass
class Outcome:
    """What a run left: the faults, the task's events and state, the services' logs."""

    faults: list[Fault]
    events: list[tuple[str, dict[str, Any]]]
    dispatched: int | None
    meta: TaskMeta | None
    states: list[SubTaskState]
    result: TaskFinished | None
    services: list[Service]
    seconds: float

    def count(self, event: str, prefix: str = "") -> int:
        """How often the services whose name starts with `prefix` logged `event`."""
        return sum(len(log_events(s, event)) for s in self.services if s.name.startswith(prefix))


def _services(config: Path, url: str, secured: LocalIdentities, logs: Path) -> list[Service]:
    def env(name: str) -> dict[str, str]:
        return service_environment(url, name, secured.passwords[name])

    orchestrators = [
        orchestrator(config, env("orchestrator"), logs, f"orchestrator-{i}")
        for i in range(ORCHESTRATORS)
    ]
    agents = [
        agent(config, ROLE, env(agent_identity_name(ROLE)), logs, f"agent-{i}")
        for i in range(AGENTS)
    ]
    return orchestrators + agents


async def _run(tmp_path: Path, workspace: Path, body: dict[str, Any]) -> Outcome:
    """Start the cluster and the services, submit `body`, fault the cluster until it is done."""
    secured = LocalIdentities([ROLE])
    cluster = rolling_cluster(tmp_path / "cluster", secured)
    url = ",".join(cluster.urls)  # every node, as a deployment would name them
    settings = settings_of(service_environment(url))
    services: list[Service] = []
    started = time.monotonic()
    cluster.start()
    try:
        await cluster.wait_ready()
        await cluster.provision(secured.settings(settings, "provisioner"), [ROLE])
        services = _services(tmp_path / "hivebus.yaml", url, secured, tmp_path / "logs")
        open_gate(workspace, "0")
        client_settings = secured.settings(settings, "client")
        async with BusProbe(cluster.urls, PROBE.name, PROBE_PASSWORD) as probe:
            async with HiveClient(url, client_settings) as client:
                await client.submit(body)

            async def progressed() -> bool:
                return bool(await probe.count(TASK, EventKind.SUBTASK_FINISHED))

            async def task_done() -> bool:
                return bool(await probe.count(TASK, EventKind.TASK_FINISHED))

            faults = RollingFaults(cluster, probe, workspace)
            try:
                await wait_for(progressed, 60, "a first sub-task finished")
                await faults.run()
                await wait_for(task_done, 60, "task_finished after the last fault")
            except TimeoutError as exc:
                pytest.fail(f"{exc}\n" + "\n".join(s.tail() for s in services))
            seconds = time.monotonic() - started
            events = await probe.events(TASK)
            dispatched = await probe.dispatched()
            async with HiveClient(url, client_settings) as client:
                meta, states, result = await client.status(TASK)
    finally:
        for service in services:
            service.stop()
        cluster.stop()
    return Outcome(faults.done, events, dispatched, meta, states, result, services, seconds)


async def test_task_survives_rolling_node_faults(tmp_path: Path) -> None:
    """Twenty node faults mid-task lose no sub-task and apply no result twice."""
    workspace = write_config(tmp_path, {ROLE: _role(tmp_path)}).workspace_dir()
    body = layered_plan(TASK, ROLE, [WIDTH] * LAYERS, _marker)
    ids = Counter(s["id"] for s in body["plan"]["subtasks"])
    run = await _run(tmp_path, workspace, body)

    faults, result = run.faults, run.result
    ledger = Ledger.read(workspace)
    lost = sorted(set(ids) - set(ledger.keys_per_subtask))
    finished = [e for kind, e in run.events if kind == "subtask_finished"]
    per_subtask = Counter(e["subtask_id"] for e in finished)
    kinds = Counter(f.kind for f in faults)
    print(  # noqa: T201 - the chaos summary line is this test's report
        f"CHAOS cluster-rolling: subtasks={len(ids)} faults={len(faults)} "
        f"{' '.join(f'{kind}={n}' for kind, n in sorted(kinds.items()))} "
        f"leaderships_hit={sum(f.led for f in faults)} "
        f"faults_with_runs_in_flight={sum(f.in_flight > 0 for f in faults)} "
        f"recovery_s_max={max(f.recovered_s for f in faults):.1f} "
        f"lost={len(lost)} duplicated_effects={ledger.duplicated_effects} "
        f"reexecuted_tool_steps={ledger.reexecuted} "
        f"finished_twice={sum(n > 1 for n in per_subtask.values())} "
        f"dispatched={run.dispatched} runs_resumed={run.count('run_resumed', 'agent')} "
        f"runs_fenced={run.count('run_fenced', 'agent')} retries={run.count('message_retry')} "
        f"seconds={run.seconds:.1f}"
    )
    for fault in faults:
        print(f"  {fault}")  # noqa: T201 - the schedule, for a reader of a failure
    assert len(faults) == FAULTS
    assert kinds["pause"] == 1
    assert all(f.in_flight > 0 for f in faults), "a fault hit no run in flight"
    assert result is not None
    published = [e for kind, e in run.events if kind == "task_finished"]
    assert [TaskFinished.model_validate(e) for e in published] == [result]
    assert result.status == TaskStatus.COMPLETED, result.reason
    assert Counter(s.id for s in result.subtasks if s.status == SubTaskStatus.COMPLETED) == ids
    assert per_subtask == ids, "a sub-task has no terminal event, or two"
    assert run.meta is not None
    assert run.meta.finished == run.meta.total == len(ids)
    assert all(s.status == SubTaskStatus.COMPLETED and s.attempt == 1 for s in run.states)
    run_of = {e["subtask_id"]: e["run_id"] for e in finished}
    assert {s.id: s.run_id for s in run.states} == run_of, "a state holds another run's result"
    assert run.dispatched == len(ids), f"WORK stored {run.dispatched} dispatches"
    assert lost == [], f"sub-tasks whose write never happened: {lost}"
    assert ledger.duplicated_effects == 0, f"applied twice: {ledger.keys.most_common(3)}"
    assert set(ledger.keys_per_subtask.values()) == {1}, "a sub-task wrote under two keys"
