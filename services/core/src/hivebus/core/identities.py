"""The NATS identity of every service and client, and exactly what each may do on the bus.

One table, read three ways: `render_authorization` writes the nats-server `authorization`
block (`hivebus nats-auth` ships it as `infra/nats/auth.conf`; `hivebus up --secure` gives the
embedded server the same with generated passwords), the permission-matrix test proves it on a
real server, and the README's permission table is printed from it.

Everything not allowed is denied. JetStream is reached through its API subjects, so an
identity is limited there too: only the provisioner creates streams, buckets and durable
consumers; a service may look up and pull from its own durable consumers only; ephemeral
consumers (the ones readers make to follow a stream) may be created only on streams the
identity may read whole; a direct get (`$JS.API.DIRECT.GET.<stream>.<subject>`) is allowed
only on the keys the identity may read. Replies come back on the identity's own inbox prefix
(`_INBOX_<name>`, see `hivebus.core.credentials`); the knowledge service answers requests
through `allow_responses`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hivebus.contracts import subjects
from hivebus.contracts.subjects import ControlKind, EventKind

JS_API = "$JS.API"
JS_ACK = "$JS.ACK"
JS_FC = "$JS.FC"


def kv_stream(bucket: str) -> str:
    """The stream behind a KV bucket."""
    return f"KV_{bucket}"


def kv_keys(bucket: str, key: str) -> str:
    """Subject of a key (or wildcard) in a KV bucket: what a put publishes to."""
    return f"$KV.{bucket}.{key}"


def object_stream(bucket: str) -> str:
    """The stream behind an object store."""
    return f"OBJ_{bucket}"


def object_subjects(bucket: str) -> str:
    """Every subject of an object store (chunks and metadata)."""
    return f"$O.{bucket}.>"


def stream_info(stream: str) -> str:
    """The API subject that looks a stream (or bucket) up; every reader of it needs this."""
    return f"{JS_API}.STREAM.INFO.{stream}"


def direct_get(stream: str, subject: str) -> str:
    """The API subject of a direct get of the last message on `subject` (a KV read)."""
    return f"{JS_API}.DIRECT.GET.{stream}.{subject}"


def msg_get(stream: str) -> str:
    """The API subject of a stream message get (by sequence or last on a subject)."""
    return f"{JS_API}.STREAM.MSG.GET.{stream}"


def ephemeral_consumer(stream: str) -> tuple[str, ...]:
    """The API subjects that create a consumer on `stream`, with or without a filter."""
    return (f"{JS_API}.CONSUMER.CREATE.{stream}", f"{JS_API}.CONSUMER.CREATE.{stream}.>")


def durable_guard(stream: str, durable: str, *, owner: bool) -> tuple[str, ...]:
    """What would create, change or delete a durable consumer; for non-owners, pull from it.

    Settling its messages is guarded too for non-owners. Denied to every identity but the
    provisioner, even where consumers of one's own are allowed on that stream (deny wins over
    allow in nats-server).
    """
    guard = (
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.{durable}.>",
        f"{JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"{JS_API}.CONSUMER.DELETE.{stream}.{durable}",
    )
    if owner:
        return guard
    return (
        *guard,
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"{JS_ACK}.{stream}.{durable}.>",
    )


def durable_pull(stream: str, durable: str) -> tuple[str, ...]:
    """What pulling from an existing durable consumer takes: look it up, fetch, settle."""
    return (
        f"{JS_API}.CONSUMER.INFO.{stream}.{durable}",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"{JS_ACK}.{stream}.{durable}.>",
    )


def kv_read(bucket: str) -> tuple[str, ...]:
    """Reading a KV bucket: look it up, get keys.

    Gets go through the stream leader (a direct get from a lagging replica could miss a key
    just written); the key of such a get is in its body, out of reach of subject permissions,
    so a reader reads the whole bucket.
    """
    stream = kv_stream(bucket)
    return (stream_info(stream), msg_get(stream), direct_get(stream, ">"))


def kv_write(bucket: str, key: str = ">") -> tuple[str, ...]:
    """Reading a KV bucket and writing (put, compare-and-set, delete) its keys `key`."""
    return (*kv_read(bucket), kv_keys(bucket, key))


def read_stream(stream: str) -> tuple[str, ...]:
    """Reading a whole stream through consumers of one's own, pushed or pulled.

    Pushed consumers need flow control answered; pulled ones are looked up and deleted when
    done.

    The wildcards would reach the services' durable consumers too: `durable_guard` denies
    those to everyone who does not own them.
    """
    return (
        stream_info(stream),
        *ephemeral_consumer(stream),
        f"{JS_API}.CONSUMER.INFO.{stream}.*",
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.*",
        f"{JS_API}.CONSUMER.DELETE.{stream}.*",
        f"{JS_FC}.{stream}.>",
    )


def artifacts_read() -> tuple[str, ...]:
    """Fetching contents by reference from the `artifacts` object store."""
    stream = object_stream(subjects.ARTIFACTS_BUCKET)
    return (
        *read_stream(stream),
        msg_get(stream),
        direct_get(stream, object_subjects(subjects.ARTIFACTS_BUCKET)),
    )


def artifacts_write() -> tuple[str, ...]:
    """Storing contents by reference in the `artifacts` object store, and fetching them."""
    stream = object_stream(subjects.ARTIFACTS_BUCKET)
    return (
        *artifacts_read(),
        f"{JS_API}.STREAM.PURGE.{stream}",
        object_subjects(subjects.ARTIFACTS_BUCKET),
    )


@dataclass(frozen=True)
class Identity:
    """One NATS user: what it is for, and the subjects it may publish and subscribe to."""

    name: str
    purpose: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...] = ()
    allow_responses: bool = False
    deny_publish: tuple[str, ...] = ()
    inbox: str = field(init=False)

    def __post_init__(self) -> None:  # noqa: D105 - sets the derived inbox
        object.__setattr__(self, "inbox", f"_INBOX_{self.name}.>")

    @property
    def env_var(self) -> str:
        """The environment variable holding its password in the shipped server config."""
        return "HIVEBUS_PASSWORD_" + "".join(c if c.isalnum() else "_" for c in self.name).upper()


def agent_identity_name(role: str) -> str:
    """The identity of a role's agents: each role its own, so none pulls another's work."""
    return f"agent-{role}"


AGENT_EVENTS = (
    EventKind.SUBTASK_STARTED,
    EventKind.STEP,
    EventKind.SUBTASK_FINISHED,
    EventKind.APPROVAL_REQUESTED,
    EventKind.APPROVAL_REFUSED,
    EventKind.BUDGET_WARNING,
    EventKind.BREAKER_CHANGED,
)
ORCHESTRATOR_EVENTS = (
    EventKind.TASK_REJECTED,
    EventKind.TASK_FINISHED,
    EventKind.APPROVAL_RESOLVED,
    EventKind.APPROVAL_REFUSED,
    EventKind.PLAN_READY,
    EventKind.PLAN_REJECTED,
)
KNOWLEDGE_REQUESTS = (
    subjects.KNOWLEDGE_READ,
    subjects.KNOWLEDGE_LIST,
    subjects.KNOWLEDGE_SEARCH,
    subjects.KNOWLEDGE_LOG,
)


def _reader() -> tuple[str, ...]:
    """What every person-facing identity reads: events, dead letters, task state."""
    return (
        *read_stream(subjects.TASKS_STREAM),
        *read_stream(subjects.EVENTS_STREAM),
        *read_stream(subjects.DLQ_STREAM),
        *read_stream(kv_stream(subjects.TASKS_BUCKET)),
        *kv_read(subjects.TASKS_BUCKET),
        *kv_read(subjects.RUNS_BUCKET),
        *artifacts_read(),
        *KNOWLEDGE_REQUESTS,
    )


def _orchestrator() -> Identity:
    pulls = [
        subject
        for consumer in subjects.orchestrator_inputs()
        for subject in durable_pull(consumer.stream, consumer.durable)
    ]
    return Identity(
        name="orchestrator",
        purpose="plans, dispatches and finishes tasks",
        publish=(
            *pulls,
            subjects.work("*"),
            *(subjects.events_of_kind(kind) for kind in ORCHESTRATOR_EVENTS),
            subjects.control_of_kind(ControlKind.DEADLINE_SCHEDULE),
            f"{subjects.control_of_kind(ControlKind.APPROVAL_SCHEDULE)}.*",
            subjects.DLQ_ALL,
            subjects.KNOWLEDGE_WRITE,
            *KNOWLEDGE_REQUESTS,
            *kv_write(subjects.TASKS_BUCKET),
            *kv_read(subjects.RUNS_BUCKET),
            *read_stream(kv_stream(subjects.KNOWLEDGE_BUCKET)),
            *kv_read(subjects.KNOWLEDGE_BUCKET),
            *read_stream(subjects.CONTROL_STREAM),
            *artifacts_write(),
        ),
    )


def _agent(role: str) -> Identity:
    tasks = subjects.TASKS_BUCKET
    return Identity(
        name=agent_identity_name(role),
        purpose=f"runs the `{role}` role's sub-tasks",
        publish=(
            *durable_pull(subjects.WORK_STREAM, subjects.agent_consumer(role)),
            *(subjects.events_of_kind(kind) for kind in AGENT_EVENTS),
            subjects.KNOWLEDGE_WRITE,
            *KNOWLEDGE_REQUESTS,
            *kv_write(subjects.RUNS_BUCKET),
            *kv_write(tasks, f"*.{subjects.LEDGER_KEY_SUFFIX}"),
            *kv_read(subjects.KNOWLEDGE_BUCKET),
            *artifacts_write(),
        ),
    )


def _knowledge() -> Identity:
    return Identity(
        name="knowledge",
        purpose="the knowledge store's single writer; answers reads and searches",
        publish=(
            *durable_pull(subjects.KNOWLEDGE_STREAM, subjects.KNOWLEDGE_WRITER_CONSUMER),
            subjects.events_of_kind(EventKind.NOTE_COMMITTED),
            *kv_write(subjects.KNOWLEDGE_BUCKET),
            *artifacts_read(),
        ),
        subscribe=KNOWLEDGE_REQUESTS,
        allow_responses=True,
    )


def _provisioner() -> Identity:
    return Identity(
        name="provisioner",
        purpose="creates streams, buckets, the object store and durable consumers; nothing else",
        publish=(
            f"{JS_API}.INFO",
            f"{JS_API}.STREAM.CREATE.*",
            f"{JS_API}.STREAM.UPDATE.*",
            f"{JS_API}.STREAM.INFO.*",
            f"{JS_API}.CONSUMER.CREATE.>",
            f"{JS_API}.CONSUMER.DURABLE.CREATE.>",
            f"{JS_API}.CONSUMER.INFO.>",
        ),
    )


def _client_rights() -> tuple[str, ...]:
    return (subjects.SUBMIT, subjects.control_of_kind(ControlKind.CANCEL), *_reader())


def _client() -> Identity:
    return Identity(
        name="client",
        purpose="submits tasks (and dead letters again), follows their events, cancels tasks",
        publish=_client_rights(),
    )


def _approver() -> Identity:
    return Identity(
        name="approver",
        purpose="decides approvals and answers questions runs ask; and what a client may do",
        publish=(subjects.control_of_kind(ControlKind.APPROVAL), *_client_rights()),
    )


def _observer(name: str, purpose: str) -> Identity:
    return Identity(name=name, purpose=purpose, publish=_reader())


def durables(roles: Iterable[str]) -> list[tuple[str, str]]:
    """Every durable consumer the provisioner creates: `(stream, name)`."""
    return [
        *((consumer.stream, consumer.durable) for consumer in subjects.orchestrator_inputs()),
        *((subjects.WORK_STREAM, subjects.agent_consumer(role)) for role in sorted(roles)),
        (subjects.KNOWLEDGE_STREAM, subjects.KNOWLEDGE_WRITER_CONSUMER),
    ]


def _guarded(identity: Identity, every_durable: list[tuple[str, str]]) -> Identity:
    def owns(stream: str, name: str) -> bool:
        return f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{name}" in identity.publish

    deny = tuple(
        subject
        for stream, name in every_durable
        for subject in durable_guard(stream, name, owner=owns(stream, name))
    )
    return dataclasses.replace(identity, deny_publish=deny)


def identities(roles: Iterable[str]) -> list[Identity]:
    """Every identity of a deployment whose configuration has `roles`, provisioner first.

    Every identity but the provisioner is denied whatever would create, change or delete a
    durable consumer, and pulling from one it does not own (`durable_guard`).
    """
    roles = sorted(roles)
    every_durable = durables(roles)
    users = [
        _orchestrator(),
        *(_agent(role) for role in roles),
        _knowledge(),
        _client(),
        _approver(),
        _observer("dashboard", "the dashboard's reads; its decisions use the approver's rights"),
        _observer("observer", "reads events, dead letters and task state; changes nothing"),
    ]
    return [_provisioner(), *(_guarded(user, every_durable) for user in users)]


def _listed(key: str, items: Iterable[str]) -> list[str]:
    return [f"          {key}: [", *(f'            "{item}"' for item in items), "          ]"]


def render_user(identity: Identity, password: str) -> str:
    """One user of the nats-server `authorization` block.

    `password` is written as given: a `$VAR` reference to the server's environment, or a
    quoted literal.
    """
    publish = _listed("allow", identity.publish)
    if identity.deny_publish:
        publish += _listed("deny", identity.deny_publish)
    lines = [
        f"    # {identity.name}: {identity.purpose}",
        "    {",
        f'      user: "{identity.name}"',
        f"      password: {password}",
        "      permissions: {",
        "        publish: {",
        *publish,
        "        }",
        "        subscribe: {",
        *_listed("allow", (identity.inbox, *identity.subscribe)),
        "        }",
    ]
    if identity.allow_responses:
        lines.append('        allow_responses: { max: 1, expires: "1m" }')
    lines += ["      }", "    }"]
    return "\n".join(lines)


def render_authorization(users: Iterable[Identity], password_of: Callable[[Identity], str]) -> str:
    """The nats-server `authorization` block for `users`.

    `password_of` says how each password is written (see `render_user`).
    """
    body = "\n".join(render_user(identity, password_of(identity)) for identity in users)
    return f"authorization {{\n  users = [\n{body}\n  ]\n}}\n"


def from_environment(identity: Identity) -> str:
    """A password read from the server's environment (`$HIVEBUS_PASSWORD_<NAME>`)."""
    return f"${identity.env_var}"
