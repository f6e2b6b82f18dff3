"""Pending approvals, found without reading everything.

One task: its approval records (`<task>.ap.*` in KV `tasks`, filtered by the server, the
latest value of each), those still `pending`. The records are the orchestrator's own state,
so an approval whose task ended (`closed`) or that was decided is never listed.

Every task: the `approval_requested` and `approval_resolved` events of the last `since_s`
seconds (at most `limit` of them, read through one ephemeral consumer filtered by the
server), the requests without a resolution, each confirmed by a direct read of its record:
a record that is resolved or closed drops it; no record yet (the orchestrator has not caught
up with the request) keeps it, unless the task already has its result. The cost grows with
the approvals asked in the window, not with the number of tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import ValidationError

from hivebus.contracts import (
    ApprovalRecord,
    ApprovalRequested,
    ApprovalResolved,
    ApprovalStatus,
    subjects,
)
from hivebus.contracts.subjects import EventKind
from hivebus.core import get_logger

log = get_logger(__name__)

DEFAULT_SINCE_S = 24 * 3600.0
"""How far back `approvals` (every task) looks for requests: a day covers the default
approval timeout (an hour) many times over; an older one is found with `--task`."""

DEFAULT_LIMIT = 10_000
"""At most this many approval events are read for one listing of every task."""

CHECKS_AT_ONCE = 64
"""Records read concurrently while confirming candidates."""

FETCH_BATCH = 500
FETCH_TIMEOUT_S = 5.0
INACTIVE_S = 30.0
"""An ephemeral reader left behind (the client died) is removed by the server after this."""


@dataclass(frozen=True)
class PendingApprovals:
    """Pending approvals, oldest first, and whether the bound on events cut the read short."""

    approvals: list[ApprovalRequested]
    truncated: bool = False


async def read_events(
    js: JetStreamContext, filters: list[str], *, since: datetime | None, limit: int
) -> tuple[list[tuple[str, bytes]], bool]:
    """`(kind, body)` of the EVENTS messages on `filters` (from `since`), at most `limit`.

    Returns the messages in stream order and whether more were left unread.
    """
    config = ConsumerConfig(
        filter_subjects=filters,
        deliver_policy=DeliverPolicy.ALL if since is None else DeliverPolicy.BY_START_TIME,
        opt_start_time=since,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=INACTIVE_S,
        mem_storage=True,
    )
    sub = await js.pull_subscribe("", stream=subjects.EVENTS_STREAM, config=config)
    name = config.name  # set by pull_subscribe: the ephemeral consumer's generated name
    found: list[tuple[str, bytes]] = []
    try:
        info = await sub.consumer_info()
        total = info.num_pending or 0
        wanted = min(total, limit)
        while len(found) < wanted:
            try:
                batch = await sub.fetch(min(FETCH_BATCH, wanted - len(found)), FETCH_TIMEOUT_S)
            except TimeoutError:
                break
            found.extend((m.subject.rsplit(".", 1)[-1], m.data) for m in batch)
        return found[:wanted], total > wanted
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await js.delete_consumer(subjects.EVENTS_STREAM, name or "")


def _record(data: bytes | None, key: str) -> ApprovalRecord | None:
    if not data:
        return None
    try:
        return ApprovalRecord.model_validate_json(data)
    except ValidationError as exc:
        log.warning("approval_record_unreadable", key=key, error=str(exc))
        return None


async def records_of_task(kv: KeyValue, task_id: str) -> list[ApprovalRecord]:
    """Every approval record of one task (the latest value of each key)."""
    watcher = await kv.watch(
        subjects.approval_key(task_id, "*"), ignore_deletes=True, inactive_threshold=INACTIVE_S
    )
    records: list[ApprovalRecord] = []
    try:
        async for entry in watcher:
            if entry is None:  # the watcher's marker: every current value was delivered
                break
            record = _record(entry.value, entry.key)
            if record is not None:
                records.append(record)
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call] # nats-py leaves it unannotated
    return records


async def pending_in_task(js: JetStreamContext, task_id: str) -> list[ApprovalRequested]:
    """The pending approvals of one task, oldest first."""
    kv = await js.key_value(subjects.TASKS_BUCKET)
    records = await records_of_task(kv, task_id)
    pending = [r.request for r in records if r.status is ApprovalStatus.PENDING]
    return sorted(pending, key=lambda r: r.ts)


async def _still_pending(kv: KeyValue, request: ApprovalRequested) -> bool:
    key = subjects.approval_key(request.task_id, request.approval_id)
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        entry = None
    record = _record(entry.value if entry else None, key)
    if record is not None:
        return record.status is ApprovalStatus.PENDING
    try:
        await kv.get(subjects.result_key(request.task_id))
    except KeyNotFoundError:
        return True  # asked, not recorded yet: the orchestrator is catching up
    return False


def _decode_requests(
    messages: list[tuple[str, bytes]],
) -> tuple[dict[str, ApprovalRequested], set[str]]:
    """The requests by id (first seen wins) and the ids resolved, from raw events."""
    requests: dict[str, ApprovalRequested] = {}
    resolved: set[str] = set()
    for kind, body in messages:
        try:
            if kind == EventKind.APPROVAL_REQUESTED.value:
                request = ApprovalRequested.model_validate_json(body)
                requests.setdefault(request.approval_id, request)
            elif kind == EventKind.APPROVAL_RESOLVED.value:
                resolved.add(ApprovalResolved.model_validate_json(body).approval_id)
        except ValidationError as exc:
            log.warning("approval_event_unreadable", kind=kind, error=str(exc))
    return requests, resolved


async def pending_recent(
    js: JetStreamContext, *, since_s: float = DEFAULT_SINCE_S, limit: int = DEFAULT_LIMIT
) -> PendingApprovals:
    """The pending approvals of every task asked in the last `since_s` seconds, oldest first."""
    since = datetime.now(UTC) - timedelta(seconds=since_s)
    filters = [
        subjects.events_of_kind(EventKind.APPROVAL_REQUESTED),
        subjects.events_of_kind(EventKind.APPROVAL_RESOLVED),
    ]
    messages, truncated = await read_events(js, filters, since=since, limit=limit)
    requests, resolved = _decode_requests(messages)
    kv = await js.key_value(subjects.TASKS_BUCKET)
    candidates = [r for approval, r in requests.items() if approval not in resolved]
    pending: list[ApprovalRequested] = []
    for start in range(0, len(candidates), CHECKS_AT_ONCE):
        chunk = candidates[start : start + CHECKS_AT_ONCE]
        kept = await asyncio.gather(*(_still_pending(kv, r) for r in chunk))
        pending.extend(r for r, keep in zip(chunk, kept, strict=True) if keep)
    return PendingApprovals(sorted(pending, key=lambda r: r.ts), truncated)


async def find_request(
    js: JetStreamContext,
    approval_id: str,
    task_id: str | None = None,
    *,
    since_s: float = DEFAULT_SINCE_S,
    limit: int = DEFAULT_LIMIT,
) -> ApprovalRequested | None:
    """The request of one approval, whatever its status: in its task, or asked recently.

    With `task_id`, its record is read, or else the task's own requests; without, the
    requests of every task of the last `since_s` seconds.
    """
    if task_id is not None:
        kv = await js.key_value(subjects.TASKS_BUCKET)
        key = subjects.approval_key(task_id, approval_id)
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            entry = None
        record = _record(entry.value if entry else None, key)
        if record is not None:
            return record.request
        filters = [subjects.event(task_id, EventKind.APPROVAL_REQUESTED)]
        messages, _ = await read_events(js, filters, since=None, limit=limit)
    else:
        since = datetime.now(UTC) - timedelta(seconds=since_s)
        filters = [subjects.events_of_kind(EventKind.APPROVAL_REQUESTED)]
        messages, _ = await read_events(js, filters, since=since, limit=limit)
    requests, _ = _decode_requests(messages)
    return requests.get(approval_id)
