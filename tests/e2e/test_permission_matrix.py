"""The permission matrix: every identity on a real nats-server with the shipped permissions.

For each identity, what it must be able to do succeeds and a set of forbidden operations is
denied: forged results, foreign work, topology changes, durable consumers hijacked, direct gets
on buckets it may not read. A denial is the server's own permissions-violation error for that
subject; an allowed request must be answered (a JetStream API reply, or "no responders" for a
request/reply subject nobody serves here).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import nats
import pytest
from nats.aio.client import Client
from nats.errors import NoRespondersError

from hivebus.console.secure import LocalIdentities
from hivebus.console.stack import provision_all
from hivebus.contracts import subjects
from hivebus.core import EmbeddedNats, Settings
from hivebus.core.identities import JS_API

ROLES = ["researcher", "writer"]
Kind = Literal["pub", "req", "sub"]
SETTLE_S = 0.5
"""How long after a flush a permissions violation is waited for."""


@dataclass(frozen=True)
class Op:
    """One operation on the bus: a publish, a request (answered) or a subscription."""

    kind: Kind
    subject: str
    body: dict[str, object] | None = None


def pub(subject: str) -> Op:
    """A core publish."""
    return Op("pub", subject)


def req(subject: str, body: dict[str, object] | None = None) -> Op:
    """A request that must be answered when allowed."""
    return Op("req", subject, body)


def sub(subject: str) -> Op:
    """A subscription."""
    return Op("sub", subject)


def api(path: str, body: dict[str, object] | None = None) -> Op:
    """A JetStream API request."""
    return req(f"{JS_API}.{path}", body)


def consumer_on(stream: str, name: str, filter_subject: str) -> Op:
    """Create a consumer named `name` on `stream` filtered to `filter_subject`."""
    config = {"name": name, "filter_subject": filter_subject, "ack_policy": "none"}
    return api(
        f"CONSUMER.CREATE.{stream}.{name}.{filter_subject}",
        {"stream_name": stream, "config": {**config, "inactive_threshold": 5_000_000_000}},
    )


def kv_get(bucket: str, key: str) -> Op:
    """A direct get of one key of a bucket."""
    return req(f"{JS_API}.DIRECT.GET.KV_{bucket}.$KV.{bucket}.{key}")


class Probe:
    """A connection as one identity that tells which of its operations the server refused."""

    def __init__(self, nc: Client) -> None:
        """Probe through `nc`; errors the server sends are collected by its error callback."""
        self.nc = nc
        self.errors: list[str] = []
        self.unanswered: list[str] = []

    async def run(self, op: Op) -> None:
        """Do `op`; a request that times out is remembered as unanswered."""
        data = json.dumps(op.body or {}).encode()
        if op.kind == "pub":
            await self.nc.publish(op.subject, data)
        elif op.kind == "sub":
            await self.nc.subscribe(op.subject)
        else:
            try:
                await self.nc.request(op.subject, data, timeout=SETTLE_S * 2)
            except NoRespondersError:
                pass  # reached the server's routing: allowed, nobody serves it here
            except TimeoutError:
                self.unanswered.append(op.subject)

    def denied(self, op: Op) -> bool:
        """Whether the server sent a permissions violation for `op`'s subject."""
        what = "subscription" if op.kind == "sub" else "publish"
        needle = f'permissions violation for {what} to "{op.subject.lower()}"'
        return any(needle in error.lower() for error in self.errors)


@pytest.fixture(scope="module")
def secured() -> LocalIdentities:
    """The shipped identities for two roles, with generated passwords."""
    return LocalIdentities(ROLES)


@pytest.fixture
async def server(secured: LocalIdentities) -> AsyncIterator[EmbeddedNats]:
    """A real server with those identities, provisioned by the provisioner."""
    async with EmbeddedNats(authorization=secured.authorization()) as running:
        await provision_all(running.url, secured.settings(Settings(), "provisioner"), ROLES)
        yield running


async def _probe(url: str, secured: LocalIdentities, name: str, ops: list[Op]) -> Probe:
    probe: Probe

    async def on_error(exc: Exception) -> None:
        probe.errors.append(str(exc))

    nc = await nats.connect(
        url,
        user=name,
        password=secured.passwords[name],
        inbox_prefix=f"_INBOX_{name}",
        error_cb=on_error,
        allow_reconnect=False,
    )
    probe = Probe(nc)
    try:
        await asyncio.gather(*(probe.run(op) for op in ops))
        await nc.flush()
        await asyncio.sleep(SETTLE_S)
    finally:
        await nc.close()
    return probe


ANY = "t-matrix"
EVENTS = subjects.EVENTS_STREAM
WORK = subjects.WORK_STREAM


def _forged(kind: str) -> Op:
    return pub(f"hive.events.{ANY}.{kind}")


ALLOWED: dict[str, list[Op]] = {
    "provisioner": [
        api("INFO"),
        api(f"STREAM.INFO.{EVENTS}"),
        api(f"CONSUMER.INFO.{WORK}.agent-researcher"),
    ],
    "orchestrator": [
        api(f"CONSUMER.INFO.{subjects.TASKS_STREAM}.orchestrator-submit"),
        api(
            f"CONSUMER.MSG.NEXT.{EVENTS}.orchestrator-subtask-finished",
            {"batch": 1, "no_wait": True},
        ),
        pub("hive.work.researcher"),
        _forged("task_finished"),
        pub(f"hive.control.{ANY}.deadline_at"),
        pub("hive.dlq.unrecoverable"),
        pub(subjects.KNOWLEDGE_WRITE),
        pub(f"$KV.tasks.{ANY}.meta"),
        kv_get("tasks", f"{ANY}.meta"),
        kv_get("runs", f"{ANY}.a.1"),
        req(subjects.KNOWLEDGE_READ),
        sub("_INBOX_orchestrator.x"),
    ],
    "agent-researcher": [
        api(f"CONSUMER.INFO.{WORK}.agent-researcher"),
        api(f"CONSUMER.MSG.NEXT.{WORK}.agent-researcher", {"batch": 1, "no_wait": True}),
        _forged("subtask_started"),
        _forged("step"),
        _forged("subtask_finished"),
        _forged("approval_requested"),
        pub(f"$KV.runs.{ANY}.a.1"),
        pub(f"$KV.tasks.{ANY}.ledger"),
        kv_get("tasks", f"{ANY}.cancel"),
        pub(subjects.KNOWLEDGE_WRITE),
        req(subjects.KNOWLEDGE_SEARCH),
        api("STREAM.INFO.OBJ_artifacts"),
    ],
    "knowledge": [
        api(
            f"CONSUMER.MSG.NEXT.{subjects.KNOWLEDGE_STREAM}.knowledge-writer",
            {"batch": 1, "no_wait": True},
        ),
        sub(subjects.KNOWLEDGE_READ),
        sub(subjects.KNOWLEDGE_SEARCH),
        _forged("note_committed"),
        pub("$KV.knowledge.write.w1"),
    ],
    "client": [
        pub(subjects.SUBMIT),
        pub(f"hive.control.{ANY}.cancel"),
        api(f"STREAM.INFO.{EVENTS}"),
        consumer_on(EVENTS, "follow1", f"hive.events.{ANY}.>"),
        kv_get("tasks", f"{ANY}.meta"),
        sub("_INBOX_client.x"),
    ],
    "approver": [
        pub(f"hive.control.{ANY}.approval"),
        pub(subjects.SUBMIT),
        consumer_on(EVENTS, "follow2", f"hive.events.{ANY}.>"),
    ],
    "dashboard": [
        consumer_on(subjects.TASKS_STREAM, "rows1", subjects.SUBMIT),
        consumer_on(EVENTS, "rows2", "hive.events.>"),
        kv_get("tasks", f"{ANY}.meta"),
    ],
    "observer": [
        consumer_on(EVENTS, "watch1", "hive.events.>"),
        consumer_on(subjects.DLQ_STREAM, "watch2", "hive.dlq.>"),
        kv_get("tasks", f"{ANY}.result"),
    ],
}

FOREIGN_WORK = [
    api(f"CONSUMER.MSG.NEXT.{WORK}.agent-writer", {"batch": 1}),
    pub(f"$JS.ACK.{WORK}.agent-writer.1.1.1.1.1"),
    consumer_on(WORK, "steal", "hive.work.writer"),
    consumer_on(WORK, "steal-all", "hive.work.*"),
]
STEAL_RESULTS = [
    api(f"CONSUMER.MSG.NEXT.{EVENTS}.orchestrator-subtask-finished", {"batch": 1, "no_wait": True}),
    pub(f"$JS.ACK.{EVENTS}.orchestrator-subtask-finished.1.1.1.1.1"),
]
HIJACK_DURABLES = [
    consumer_on(EVENTS, "orchestrator-subtask-finished", "hive.events.*.subtask_finished"),
    api(f"CONSUMER.DELETE.{EVENTS}.orchestrator-subtask-finished"),
    api(f"CONSUMER.DURABLE.CREATE.{EVENTS}.evil"),
]
TOPOLOGY = [
    api("STREAM.CREATE.EVIL"),
    api(f"STREAM.DELETE.{EVENTS}"),
    api(f"STREAM.PURGE.{subjects.TASKS_STREAM}"),
    api(f"STREAM.UPDATE.{WORK}"),
]
KNOWLEDGE_WRITES = [pub("$KV.knowledge.write.forged"), _forged("note_committed")]
DECISIONS = [pub(f"hive.control.{ANY}.approval")]
FORGED_RESULTS = [_forged("subtask_finished"), _forged("step"), _forged("task_finished")]
PRIVATE_BUCKETS = [
    kv_get("knowledge", "write.w1"),
    api("STREAM.MSG.GET.KV_knowledge"),
]
OTHER_INBOXES = [sub("_INBOX.>"), sub("_INBOX_orchestrator.>"), sub(">")]
TASK_STATE_WRITES = [pub(f"$KV.tasks.{ANY}.meta"), pub(f"$KV.tasks.{ANY}.result")]
CORE_EVENTS = [sub("hive.events.>"), sub("hive.work.>")]

DENIED: dict[str, list[Op]] = {
    "provisioner": [
        pub(subjects.SUBMIT),
        *FORGED_RESULTS,
        api(f"CONSUMER.MSG.NEXT.{WORK}.agent-researcher", {"batch": 1}),
        kv_get("tasks", f"{ANY}.meta"),
        pub(f"$KV.tasks.{ANY}.meta"),
        api(f"STREAM.DELETE.{EVENTS}"),
        *OTHER_INBOXES,
    ],
    "orchestrator": [
        *TOPOLOGY,
        *HIJACK_DURABLES,
        _forged("subtask_finished"),
        pub(f"hive.control.{ANY}.cancel"),
        *DECISIONS,
        *KNOWLEDGE_WRITES,
        *OTHER_INBOXES[:1],
    ],
    "agent-researcher": [
        *STEAL_RESULTS,
        *FOREIGN_WORK,
        pub(f"hive.control.{ANY}.cancel"),
        *DECISIONS,
        pub("hive.work.writer"),
        _forged("task_finished"),
        _forged("plan_ready"),
        *TASK_STATE_WRITES,
        *KNOWLEDGE_WRITES,
        *HIJACK_DURABLES,
        *TOPOLOGY,
        consumer_on(EVENTS, "peek", "hive.events.>"),
        *CORE_EVENTS,
    ],
    "knowledge": [
        *STEAL_RESULTS,
        pub(subjects.KNOWLEDGE_WRITE),
        *FORGED_RESULTS,
        pub("hive.work.researcher"),
        *TASK_STATE_WRITES,
        *TOPOLOGY,
        *HIJACK_DURABLES,
    ],
    "client": [
        *STEAL_RESULTS,
        *FORGED_RESULTS,
        _forged("approval_resolved"),
        api(f"CONSUMER.MSG.NEXT.{WORK}.agent-researcher", {"batch": 1}),
        *FOREIGN_WORK,
        pub("hive.work.researcher"),
        *DECISIONS,
        *TASK_STATE_WRITES,
        *KNOWLEDGE_WRITES,
        pub(subjects.KNOWLEDGE_WRITE),
        *HIJACK_DURABLES,
        *TOPOLOGY,
        *PRIVATE_BUCKETS,
        *OTHER_INBOXES,
        *CORE_EVENTS,
    ],
    "approver": [
        *STEAL_RESULTS,
        *FORGED_RESULTS,
        *FOREIGN_WORK,
        *TASK_STATE_WRITES,
        *HIJACK_DURABLES,
        *PRIVATE_BUCKETS,
    ],
    "dashboard": [
        *STEAL_RESULTS,
        pub(subjects.SUBMIT),
        pub(f"hive.control.{ANY}.cancel"),
        *DECISIONS,
        *FORGED_RESULTS,
        *TASK_STATE_WRITES,
        *HIJACK_DURABLES,
    ],
    "observer": [
        *STEAL_RESULTS,
        pub(subjects.SUBMIT),
        pub(f"hive.control.{ANY}.cancel"),
        *DECISIONS,
        *FORGED_RESULTS,
        *TASK_STATE_WRITES,
        *KNOWLEDGE_WRITES,
        *HIJACK_DURABLES,
        *TOPOLOGY,
        *PRIVATE_BUCKETS,
    ],
}


def test_every_identity_is_in_the_matrix(secured: LocalIdentities) -> None:
    """No identity ships without its allowed and forbidden operations being proven here."""
    names = {user.name for user in secured.users}
    assert names == set(ALLOWED) | {"agent-writer"} == set(DENIED) | {"agent-writer"}


@pytest.mark.parametrize("name", sorted(ALLOWED))
async def test_an_identity_can_do_its_job_and_nothing_forbidden(
    server: EmbeddedNats, secured: LocalIdentities, name: str
) -> None:
    """Each allowed operation passes; each forbidden one is refused by the server."""
    allowed, denied = ALLOWED[name], DENIED[name]
    probe = await _probe(server.url, secured, name, [*allowed, *denied])
    refused = [op for op in allowed if probe.denied(op)]
    assert not refused, f"{name} was refused: {refused}\n{probe.errors}"
    unanswered = [
        op.subject for op in allowed if op.kind == "req" and op.subject in probe.unanswered
    ]
    assert not unanswered, f"{name}: allowed requests got no answer: {unanswered}"
    let_through = [op for op in denied if not probe.denied(op)]
    assert not let_through, f"{name} was allowed: {let_through}"
    print(f"{name}: {len(allowed)} allowed, {len(denied)} denied")  # noqa: T201 - the matrix


async def test_an_anonymous_connection_is_refused(server: EmbeddedNats) -> None:
    """With the identities on, a connection without credentials is not let in at all."""
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await nats.connect(server.url, allow_reconnect=False, max_reconnect_attempts=0)
