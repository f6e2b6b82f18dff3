"""Decisions sent before their approval was recorded, read back from CONTROL when it is.

A person (or a script) may decide by the deterministic approval id before the orchestrator has
recorded the request. Such a decision is put back (nak with delay) until the record is there,
so a decision sent after it could be applied first. To keep "the first decision wins" in the
order decisions were stored, the request's handler reads the task's recent decisions here and
creates the record already resolved by the first valid one (`Pauses.requested`).
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Protocol

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from hivebus.contracts import ApprovalDecided, subjects
from hivebus.contracts.subjects import ControlKind
from hivebus.core import get_logger

log = get_logger(__name__)

MAX_EARLY_DECISIONS = 1000
"""Decisions of one task read back at most (they are a person's, so a handful)."""

FETCH_BATCH = 100
FETCH_TIMEOUT_S = 2.0
INACTIVE_S = 30.0
"""A reader left behind (the orchestrator died reading) is removed by the server after this."""


class DecisionLog(Protocol):
    """The decisions stored on CONTROL, for reading back."""

    async def since(self, task_id: str, after: datetime) -> list[ApprovalDecided]:
        """The task's decisions stored after `after`, oldest first (bounded)."""
        ...


class StreamDecisionLog:
    """`DecisionLog` on the CONTROL stream: an ephemeral reader from a start time."""

    def __init__(self, js: JetStreamContext, limit: int = MAX_EARLY_DECISIONS) -> None:
        """Read through `js`, at most `limit` decisions per call."""
        self.js = js
        self.limit = limit

    async def since(self, task_id: str, after: datetime) -> list[ApprovalDecided]:
        """See `DecisionLog`; an undecodable message is skipped (its handler terminates it)."""
        config = ConsumerConfig(
            filter_subject=subjects.control(task_id, ControlKind.APPROVAL),
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=after + timedelta(microseconds=1),  # the server's bound is inclusive
            ack_policy=AckPolicy.NONE,
            inactive_threshold=INACTIVE_S,
            mem_storage=True,
        )
        sub = await self.js.pull_subscribe("", stream=subjects.CONTROL_STREAM, config=config)
        found: list[ApprovalDecided] = []
        try:
            wanted = min((await sub.consumer_info()).num_pending or 0, self.limit)
            read = 0
            while read < wanted:
                try:
                    batch = await sub.fetch(min(FETCH_BATCH, wanted - read), FETCH_TIMEOUT_S)
                except TimeoutError:
                    break
                read += len(batch)
                for msg in batch:
                    with contextlib.suppress(ValidationError):
                        found.append(ApprovalDecided.model_validate_json(msg.data))
            return found
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(subjects.CONTROL_STREAM, config.name or "")


class MemoryDecisionLog:
    """`DecisionLog` in a list, for tests without a network."""

    def __init__(self) -> None:
        """Nothing stored."""
        self.stored: list[tuple[datetime, ApprovalDecided]] = []

    def add(self, decision: ApprovalDecided, at: datetime) -> None:
        """Store a decision as the bus would, at `at`."""
        self.stored.append((at, decision))

    async def since(self, task_id: str, after: datetime) -> list[ApprovalDecided]:
        """See `DecisionLog`."""
        return [d for at, d in self.stored if d.task_id == task_id and at > after]
