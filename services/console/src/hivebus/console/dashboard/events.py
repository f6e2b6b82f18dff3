"""A task's events, as rows (`/events`) and live as Server-Sent Events (`/stream`).

Both read EVENTS filtered by the server to `hive.events.<task>.>`, from a stream sequence
on: rows through an ephemeral pull consumer (at most `limit` at a time), the live stream
through an ordered push consumer that lasts as long as the browser's connection. Each event
goes out as it was published (scrubbed by the agents before it was), with its stream
sequence, kind and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from hivebus.console.dashboard.index import iso, parse_time
from hivebus.contracts import subjects

DEFAULT_LIMIT = 1000
MAX_LIMIT = 5000
FETCH_BATCH = 250
FETCH_TIMEOUT_S = 2.0
INACTIVE_S = 30.0
"""A consumer left behind (the dashboard died) is removed by the server after this."""

KEEPALIVE_S = 15.0
"""A comment line this often keeps proxies and the browser from closing a quiet stream."""

QUEUE_SIZE = 1000
"""Events read for one browser and not yet sent; the read waits when it is full."""

RETRY_MS = 2000
"""How long a browser waits before reconnecting a dropped stream (it sends Last-Event-ID)."""


def event_row(msg: Msg) -> dict[str, Any]:
    """One EVENTS message as an EventRow: `seq`, `kind`, `time`, `event`."""
    try:
        event = json.loads(msg.data)
    except ValueError:
        event = None
    stamp = parse_time(event.get("ts")) if isinstance(event, dict) else None
    return {
        "seq": msg.metadata.sequence.stream,
        "kind": msg.subject.rsplit(".", 1)[-1],
        "time": iso(stamp or msg.metadata.timestamp),
        "event": event,
    }


def _start(after: int) -> ConsumerConfig:
    if after <= 0:
        return ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1)


async def read_rows(
    js: JetStreamContext, task_id: str, after: int, limit: int = DEFAULT_LIMIT
) -> dict[str, Any]:
    """`{"events": [...], "last": seq}`: the task's events after `after`, oldest first."""
    config = _start(after)
    config.filter_subject = subjects.events_of(task_id)
    config.ack_policy = AckPolicy.NONE
    config.inactive_threshold = INACTIVE_S
    config.mem_storage = True
    # The subject argument is the filter: nats-py writes it over `config.filter_subject`.
    sub = await js.pull_subscribe(
        subjects.events_of(task_id), stream=subjects.EVENTS_STREAM, config=config
    )
    rows: list[dict[str, Any]] = []
    try:
        wanted = min((await sub.consumer_info()).num_pending or 0, limit)
        while len(rows) < wanted:
            try:
                batch = await sub.fetch(min(FETCH_BATCH, wanted - len(rows)), FETCH_TIMEOUT_S)
            except (TimeoutError, NatsTimeoutError):
                break
            rows.extend(event_row(m) for m in batch)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await js.delete_consumer(subjects.EVENTS_STREAM, config.name or "")
    rows = rows[:wanted]
    return {"events": rows, "last": rows[-1]["seq"] if rows else after}


def sse_message(row: dict[str, Any]) -> str:
    """One EventRow as an SSE message (`id`, `event`, one `data` line)."""
    data = json.dumps(row, ensure_ascii=False, separators=(",", ":"))
    return f"id: {row['seq']}\nevent: {row['kind']}\ndata: {data}\n\n"


async def live(
    js: JetStreamContext, task_id: str, after: int, keepalive_s: float = KEEPALIVE_S
) -> AsyncIterator[str]:
    """SSE text for every event of the task after `after`, then each new one as it is stored.

    Runs until the browser goes away (the caller's response is cancelled); a comment every
    `keepalive_s` while nothing happens.
    """
    queue: asyncio.Queue[Msg] = asyncio.Queue(QUEUE_SIZE)

    async def on(msg: Msg) -> None:
        await queue.put(msg)

    sub = await js.subscribe(
        subjects.events_of(task_id),
        stream=subjects.EVENTS_STREAM,
        config=_start(after),
        cb=on,
        ordered_consumer=True,
    )
    try:
        yield f"retry: {RETRY_MS}\n: connected\n\n"
        while True:
            try:
                msg = await asyncio.wait_for(queue.get(), keepalive_s)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            yield sse_message(event_row(msg))
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
