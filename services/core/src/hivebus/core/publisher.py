"""The one publisher every service uses: where a message goes comes from the message itself.

`subjects.address` names the subject, the stream and the `Nats-Msg-Id` (so a repeated publish
is stored once) of each kind of message; this module only puts it on the bus.

A message is serialized once. When it is over the server's `max_payload` (less room for the
headers), its big part goes to the `artifacts` object store and its small version travels
(`hivebus.core.artifacts`); a message that cannot travel so raises `PayloadTooLargeError`,
which is never retried. The trace context current at the publish travels in the headers
(W3C `traceparent`), so whoever handles the message continues the same trace.
"""

from __future__ import annotations

from typing import Protocol

from faststream.nats import NatsBroker, Schedule
from pydantic import BaseModel

from hivebus.contracts import subjects
from hivebus.core import telemetry
from hivebus.core.artifacts import Artifacts, PayloadTooLargeError, offload
from hivebus.core.logging import get_logger

log = get_logger(__name__)

HEADER_ROOM_BYTES = 4 * 1024
"""Kept free of `max_payload` for the headers, which the server counts with the body."""

JSON_CONTENT_TYPE = "application/json"


class EventSink(Protocol):
    """Anything that takes hivebus messages: the bus, or a list in a unit test."""

    async def publish(self, message: BaseModel) -> None:
        """Put one message where its address says."""
        ...


class Publisher:
    """JetStream publishes through one connected broker, each waiting for its ack."""

    def __init__(
        self, broker: NatsBroker, timeout_s: float, *, artifacts: Artifacts | None = None
    ) -> None:
        """Publish through `broker`, waiting at most `timeout_s` for each acknowledgement.

        Large contents go to `artifacts`; without one, the broker's own connection is used
        the first time one is needed.
        """
        self.broker = broker
        self.timeout_s = timeout_s
        self.artifacts = artifacts

    async def publish(self, message: BaseModel) -> None:
        """Publish `message` to its subject and stream, with its message id.

        Raises:
            TypeError: hivebus has no address for this kind of message (a bug).
            PayloadTooLargeError: too large for the bus and not storable by reference
                (`ArtifactRefusedError` when the object store refused it); not retryable.
        """
        address = subjects.address(message)
        body = message.model_dump_json().encode()
        budget = await self.payload_budget()
        if len(body) > budget:
            body = await self._by_reference(message, body, budget)
        schedule = (
            Schedule(time=address.schedule_at, target=address.schedule_target)
            if address.schedule_at is not None and address.schedule_target is not None
            else None
        )
        headers = {"content-type": JSON_CONTENT_TYPE, subjects.MSG_ID_HEADER: address.msg_id}
        telemetry.inject(headers)
        await self.broker.publish(
            body,
            address.subject,
            headers=headers,
            stream=address.stream,
            timeout=self.timeout_s,
            schedule=schedule,
        )

    async def payload_budget(self) -> int:
        """The largest body one message may have on the connected server."""
        connection = await self.broker.connect()
        return int(connection.max_payload) - HEADER_ROOM_BYTES

    async def store(self) -> Artifacts:
        """The artifacts store, made from the broker's connection the first time."""
        if self.artifacts is None:
            # As `hivebus.core.bus.jetstream` does (that module imports this one).
            connection = await self.broker.connect()
            self.artifacts = Artifacts(connection.jetstream())
        return self.artifacts

    async def _by_reference(self, message: BaseModel, body: bytes, budget: int) -> bytes:
        kind = type(message).__name__
        small = offload(message, body, budget)
        if small is None:
            raise PayloadTooLargeError(
                f"the payload could not be stored: a {kind} of {len(body)} bytes is over the "
                f"bus's limit of {budget} bytes, and a {kind} cannot be passed by reference"
            )
        small_body = small.message.model_dump_json().encode()
        if len(small_body) > budget:
            raise PayloadTooLargeError(
                f"the payload could not be stored: a {kind} of {len(body)} bytes is still "
                f"{len(small_body)} bytes by reference, over the bus's limit of {budget} bytes"
            )
        await (await self.store()).put(small.name, small.content)
        log.info("payload_by_reference", kind=kind, ref=small.name, bytes=len(body))
        return small_body
