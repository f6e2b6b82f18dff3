"""Connecting to NATS: one FastStream broker per service."""

from __future__ import annotations

import logging

from faststream.nats import NatsBroker
from nats.js import JetStreamContext

from hivebus.core.credentials import inbox_prefix, nats_security
from hivebus.core.decoding import bounded_decoder
from hivebus.core.settings import Settings
from hivebus.core.settle import invalid_message_middleware


def new_broker(url: str, service: str, settings: Settings) -> NatsBroker:
    """A FastStream NATS broker named after its service; retries its connection forever.

    `url` may list several servers separated by commas (the nodes of a cluster). Bodies that
    fail validation are settled by the one policy of `hivebus.core.settle`; bodies too large or
    nested too deeply are never decoded (`hivebus.core.decoding`). The identity (user, creds,
    TLS, inbox prefix) comes from `hivebus.core.credentials`.

    Raises:
        ConfigError: a credentials file named in the settings cannot be read.
    """
    return NatsBroker(
        [part.strip() for part in url.split(",") if part.strip()],
        name=f"hivebus-{service}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        graceful_timeout=10.0,
        logger=logging.getLogger(f"hivebus.{service}.faststream"),
        middlewares=[invalid_message_middleware(settings)],
        decoder=bounded_decoder,
        security=nats_security(settings),
        inbox_prefix=inbox_prefix(settings),
    )


def pull_inbox(settings: Settings) -> bytes:
    """Inbox prefix for a pull subscriber's fetches, the broker's own.

    FastStream's default ignores the broker's, and the shipped permissions let a process read
    only its own inboxes.
    """
    return f"{inbox_prefix(settings)}.".encode()


async def jetstream(broker: NatsBroker) -> JetStreamContext:
    """The JetStream context of a connected broker (for KV compare-and-set and provisioning)."""
    connection = await broker.connect()
    return connection.jetstream()
