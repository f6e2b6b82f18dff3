"""The one publisher every service uses: where a message goes comes from the message itself.

`subjects.address` names the subject, the stream and the `Nats-Msg-Id` (so a repeated publish
is stored once) of each kind of message; this module only puts it on the bus.
"""

from __future__ import annotations

from typing import Protocol

from faststream.nats import NatsBroker, Schedule
from pydantic import BaseModel

from hivebus.contracts import subjects


class EventSink(Protocol):
    """Anything that takes hivebus messages: the bus, or a list in a unit test."""

    async def publish(self, message: BaseModel) -> None:
        """Put one message where its address says."""
        ...


class Publisher:
    """JetStream publishes through one connected broker, each waiting for its ack."""

    def __init__(self, broker: NatsBroker, timeout_s: float) -> None:
        """Publish through `broker`, waiting at most `timeout_s` for each acknowledgement."""
        self.broker = broker
        self.timeout_s = timeout_s

    async def publish(self, message: BaseModel) -> None:
        """Publish `message` to its subject and stream, with its message id.

        Raises:
            TypeError: hivebus has no address for this kind of message (a bug).
        """
        address = subjects.address(message)
        schedule = (
            Schedule(time=address.schedule_at, target=address.schedule_target)
            if address.schedule_at is not None and address.schedule_target is not None
            else None
        )
        await self.broker.publish(
            message,
            address.subject,
            headers={subjects.MSG_ID_HEADER: address.msg_id},
            stream=address.stream,
            timeout=self.timeout_s,
            schedule=schedule,
        )
