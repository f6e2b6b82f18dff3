"""What `hivebus stats` reads: EVENTS and DLQ from a stream time, up to their end at the start.

Each stream is read through one ordered consumer (ephemeral, in memory, flow-controlled; nats-py
recreates it past a gap) starting at a stream time (`DeliverPolicy.BY_START_TIME`), and the read
stops at the stream's last sequence as of the start (or when nothing is left pending, whichever
comes first): new events are not waited for. EVENTS is read whole and the kinds the scorecard
does not use are skipped by their subject's last token before decoding: a consumer filtered by
the server to the four kinds it uses was several times slower on 100,000 events than reading
all of them. Dead letters are on the DLQ stream (`DeadLetter` does not go to EVENTS), read too.
Bodies are decoded with `json.loads`; only the fields the scorecard uses are kept
(`hivebus.console.stats_tally`).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from hivebus.console.stats_tally import Tally
from hivebus.contracts import subjects
from hivebus.contracts.subjects import EventKind
from hivebus.core.credentials import connect_options
from hivebus.core.settings import Settings

LOOKBACK = timedelta(hours=1)
"""How far (stream time) before the earliest window the read starts, so the starts, steps and
approval requests of a sub-task that ended just inside the window are read too."""

EVENT_KINDS = frozenset(
    kind.value
    for kind in (
        EventKind.SUBTASK_STARTED,
        EventKind.STEP,
        EventKind.SUBTASK_FINISHED,
        EventKind.APPROVAL_REQUESTED,
    )
)
"""The EVENTS kinds the scorecard uses; the others are skipped undecoded."""

IDLE_S = 10.0
"""A stream that delivers nothing for this long before its end is reached is an error."""
CONNECT_TIMEOUT_S = 5
CONNECT_ATTEMPTS = 1
"""Tries beyond the first at each server before the command gives up (nats-py's count)."""
CONNECT_WAIT_S = 0.5
PENDING_MSGS = 1_000_000
"""Messages nats-py may hold for the reader (flow control keeps the server to the pace)."""

_V1_TOKENS = 9
"""`$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`; longer replies carry
a domain and an account hash after `ACK` (`nats.aio.msg` reads them the same way)."""


class StatsReadError(Exception):
    """The bus could not be read to the end; the message says what to check."""


def _position(reply: str) -> tuple[int, int]:
    """The stream sequence of a delivered message and the messages still pending after it."""
    tokens = reply.split(".")
    if len(tokens) == _V1_TOKENS:
        return int(tokens[5]), int(tokens[8])
    return int(tokens[7]), int(tokens[10])


async def read_stream(
    js: JetStreamContext,
    stream: str,
    subject: str,
    since: datetime,
    tally: Tally,
    *,
    kinds: frozenset[str] | None = None,
) -> None:
    """Add to `tally` the messages of `stream` stored since `since`, up to its end now.

    `kinds`: the last subject tokens to decode (None: every message).

    Raises:
        StatsReadError: the stream does not exist, or stopped delivering before its end.
    """
    try:
        last = (await js.stream_info(stream)).state.last_seq
    except NotFoundError as exc:
        raise StatsReadError(
            f"no {stream} stream on the server: is hivebus provisioned there (`hivebus up`)?"
        ) from exc
    done = asyncio.Event()
    read = 0

    async def on(msg: Msg) -> None:
        nonlocal read
        read += 1
        if kinds is None or msg.subject.rpartition(".")[2] in kinds:
            tally.add_json(msg.data)
        else:
            tally.pass_over()
        seq, pending = _position(msg.reply)
        if seq >= last or pending == 0:
            done.set()

    sub = await js.subscribe(
        subject,
        stream=stream,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.BY_START_TIME,
        config=ConsumerConfig(opt_start_time=since),
        cb=on,
        pending_msgs_limit=PENDING_MSGS,
    )
    try:
        info = await sub.consumer_info()
        delivered = info.delivered.consumer_seq if info.delivered else 0
        if not info.num_pending and not delivered:
            return  # nothing stored since `since`
        while not done.is_set():
            before = read
            try:
                await asyncio.wait_for(done.wait(), IDLE_S)
            except TimeoutError:
                if read == before:
                    raise StatsReadError(
                        f"{stream} stopped delivering before its end ({read} read); try again"
                    ) from None
    finally:
        await sub.unsubscribe()


async def _quiet(_: Exception) -> None:
    """nats-py reports connection errors here; the command reports its own."""


async def collect(url: str, since: datetime, settings: Settings) -> Tally:
    """Every event the scorecard needs, read from EVENTS and DLQ since `since` (stream time).

    The connection is nats-py's own, bounded (two tries, no reconnection): a command must not
    hang on a server that is gone (the services' broker retries forever).

    Raises:
        StatsReadError: the server cannot be reached or read.
    """
    servers = [part.strip() for part in url.split(",") if part.strip()]
    try:
        nc: Client = await nats.connect(
            servers,
            name="hivebus-stats",
            connect_timeout=CONNECT_TIMEOUT_S,
            allow_reconnect=False,
            max_reconnect_attempts=CONNECT_ATTEMPTS,  # also bounds the first connection's tries
            reconnect_time_wait=CONNECT_WAIT_S,
            error_cb=_quiet,
            **connect_options(settings),
        )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        raise StatsReadError(
            f"cannot reach the server at {url} ({exc or type(exc).__name__}): is it running, "
            "and is HIVEBUS_NATS_URL right?"
        ) from exc
    tally = Tally()
    try:
        js = nc.jetstream()
        await read_stream(
            js, subjects.EVENTS_STREAM, subjects.EVENTS_ALL, since, tally, kinds=EVENT_KINDS
        )
        await read_stream(js, subjects.DLQ_STREAM, subjects.DLQ_ALL, since, tally)
    except nats.errors.Error as exc:
        raise StatsReadError(f"reading the server at {url} failed: {exc!r}") from exc
    finally:
        await nc.close()
    return tally
