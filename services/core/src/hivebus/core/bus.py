"""Connecting to NATS: one FastStream broker per service, and publishing with a message id."""

from __future__ import annotations

import logging

from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from pydantic import BaseModel

from hivebus.contracts import subjects
from hivebus.core.settings import Settings
from hivebus.core.settle import invalid_message_middleware


def new_broker(url: str, service: str) -> NatsBroker:
    """A FastStream NATS broker named after its service; retries its connection forever.

    `url` may list several servers separated by commas (the nodes of a cluster).
    """
    return NatsBroker(
        [part.strip() for part in url.split(",") if part.strip()],
        name=f"hivebus-{service}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        graceful_timeout=10.0,
        logger=logging.getLogger(f"hivebus.{service}.faststream"),
        middlewares=[invalid_message_middleware()],
    )


async def jetstream(broker: NatsBroker) -> JetStreamContext:
    """The JetStream context of a connected broker (for KV compare-and-set and provisioning)."""
    connection = await broker.connect()
    return connection.jetstream()


async def publish_event(
    broker: NatsBroker,
    event: BaseModel,
    *,
    subject: str,
    stream: str,
    msg_id: str,
    settings: Settings,
) -> None:
    """JetStream publish with `Nats-Msg-Id`, so a repeated publish is stored once."""
    await broker.publish(
        event,
        subject,
        headers={subjects.MSG_ID_HEADER: msg_id},
        stream=stream,
        timeout=settings.publish_timeout_s,
    )
