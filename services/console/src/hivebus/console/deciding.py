"""What became of a decision a client sent: applied, refused (and why), or no answer in time.

The orchestrator answers every `ApprovalDecided` on EVENTS: the `ApprovalResolved` it came
from names it (`decision_event_id`) when it won; an `ApprovalRefused` names it when it changed
nothing. `OutcomeWatch` is opened before the decision is published, so neither is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Self

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from pydantic import ValidationError

from hivebus.contracts import (
    ApprovalDecided,
    ApprovalRefused,
    ApprovalResolved,
    RefusalCode,
    subjects,
)
from hivebus.contracts.subjects import EventKind
from hivebus.core import get_logger

log = get_logger(__name__)

POLL_S = 1.0
"""Longest single fetch while waiting, so the overall bound is kept to about a second."""

INACTIVE_S = 30.0


class OutcomeStatus(StrEnum):
    """What became of a decision."""

    APPLIED = "applied"
    """It is the decision that counts (`ApprovalResolved` names it)."""
    REFUSED = "refused"
    """It changed nothing (`ApprovalRefused` names it, or it could not even be sent)."""
    UNANSWERED = "unanswered"
    """Sent; no answer came within the wait (it may still be applied)."""
    SENT = "sent"
    """Sent; nobody waited for the answer."""


@dataclass(frozen=True)
class Outcome:
    """A decision's outcome, with the events that tell it."""

    status: OutcomeStatus
    approval_id: str
    decided: ApprovalDecided | None = None
    """What was published; None when nothing could be (the approval was not found)."""
    resolved: ApprovalResolved | None = None
    refused: ApprovalRefused | None = None
    code: RefusalCode | None = None
    why: str = ""


def not_found(approval_id: str, why: str) -> Outcome:
    """The outcome of a decision that could not be sent: nobody asked for `approval_id`."""
    return Outcome(OutcomeStatus.REFUSED, approval_id, code=RefusalCode.UNKNOWN, why=why)


def outcome_of(decided: ApprovalDecided, event: object) -> Outcome | None:
    """The outcome `event` tells about `decided`, or None when it is about something else.

    A resolution from another decision (someone decided first) says nothing about this one:
    its refusal (`already_decided`) follows.
    """
    if isinstance(event, ApprovalRefused) and event.decision_event_id == decided.event_id:
        return Outcome(
            OutcomeStatus.REFUSED,
            decided.approval_id,
            decided=decided,
            refused=event,
            code=event.code,
            why=event.why,
        )
    if (
        isinstance(event, ApprovalResolved)
        and event.approval_id == decided.approval_id
        and event.decision_event_id == decided.event_id
    ):
        return Outcome(OutcomeStatus.APPLIED, decided.approval_id, decided=decided, resolved=event)
    return None


def _decode(kind: str, body: bytes) -> ApprovalResolved | ApprovalRefused | None:
    try:
        if kind == EventKind.APPROVAL_RESOLVED.value:
            return ApprovalResolved.model_validate_json(body)
        if kind == EventKind.APPROVAL_REFUSED.value:
            return ApprovalRefused.model_validate_json(body)
    except ValidationError as exc:
        log.warning("approval_event_unreadable", kind=kind, error=str(exc))
    return None


class OutcomeWatch:
    """Resolutions and refusals of one task from now on (`async with`, then `wait`)."""

    def __init__(self, js: JetStreamContext, task_id: str) -> None:
        """Watch the task `task_id`; nothing is read before `__aenter__`."""
        self.js = js
        self.task_id = task_id
        self._sub: JetStreamContext.PullSubscription | None = None
        self._name = ""

    async def __aenter__(self) -> Self:
        """Start reading at the end of EVENTS: what is published next is seen."""
        config = ConsumerConfig(
            filter_subjects=[
                subjects.event(self.task_id, EventKind.APPROVAL_RESOLVED),
                subjects.event(self.task_id, EventKind.APPROVAL_REFUSED),
            ],
            deliver_policy=DeliverPolicy.NEW,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=INACTIVE_S,
            mem_storage=True,
        )
        self._sub = await self.js.pull_subscribe("", stream=subjects.EVENTS_STREAM, config=config)
        self._name = config.name or ""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Remove the reader."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(subjects.EVENTS_STREAM, self._name)
            self._sub = None

    async def wait(self, decided: ApprovalDecided, timeout_s: float) -> Outcome:
        """The outcome of `decided`, or `unanswered` when none came within `timeout_s`."""
        if self._sub is None:
            raise RuntimeError("OutcomeWatch.wait outside `async with`")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (left := deadline - loop.time()) > 0:
            try:
                batch = await self._sub.fetch(16, timeout=max(min(POLL_S, left), 0.05))
            except (TimeoutError, NatsTimeoutError):
                continue
            for message in batch:
                event = _decode(message.subject.rsplit(".", 1)[-1], message.data)
                outcome = outcome_of(decided, event)
                if outcome is not None:
                    return outcome
        return Outcome(
            OutcomeStatus.UNANSWERED,
            decided.approval_id,
            decided=decided,
            why=f"no answer to the decision within {timeout_s:g}s; it may still apply",
        )
