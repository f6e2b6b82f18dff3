"""The one settlement policy: the error decides ack, nak, term (with a dead letter) or leave."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from hivebus.contracts import DeadLetter, IllegalTransitionError, SubTaskFinished, subjects
from hivebus.core import CasConflictError, SupersededError, UndecodableError
from hivebus.core.settle import Settlement, Settler, settlement_for


@dataclass
class FakeMeta:
    """The JetStream metadata the settler reads."""

    stream: str = "WORK"
    num_delivered: int = 1

    @property
    def sequence(self) -> Any:
        """Stream sequence 7."""
        return type("Seq", (), {"stream": 7})()


@dataclass
class FakeRaw:
    """The raw NATS message under a FastStream message."""

    subject: str
    metadata: FakeMeta = field(default_factory=FakeMeta)


class FakeMessage:
    """A message that records how it was settled."""

    def __init__(self, subject: str, body: bytes = b"{}") -> None:
        """On `subject` with `body`."""
        self.raw_message = FakeRaw(subject)
        self.body = body
        self.message_id = "m1"
        self.headers: dict[str, str] = {}
        self.settled: list[str] = []
        self.delay: float | None = None

    async def ack(self) -> None:
        """Record an ack."""
        self.settled.append("ack")

    async def nack(self, delay: float | None = None) -> None:
        """Record a nak and its delay."""
        self.settled.append("nak")
        self.delay = delay

    async def reject(self) -> None:
        """Record a term."""
        self.settled.append("term")


class FakeSink:
    """Keeps what the settler publishes; can refuse like a bus that is down."""

    def __init__(self, *, down: bool = False) -> None:
        """Publish nothing yet."""
        self.down = down
        self.published: list[BaseModel] = []

    async def publish(self, message: BaseModel) -> None:
        """Keep the message, or fail."""
        if self.down:
            raise ConnectionError("bus down")
        self.published.append(message)


class RetryableError(Exception):
    """Says a retry can help."""

    retryable = True


def _validation_error() -> ValidationError:
    try:
        SubTaskFinished.model_validate({"task_id": "t"})
    except ValidationError as exc:
        return exc
    raise AssertionError("expected a validation error")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RetryableError("x"), Settlement.NAK),
        (CasConflictError("lost races"), Settlement.NAK),
        (TimeoutError("publish timed out"), Settlement.NAK),
        (IllegalTransitionError("sub-task", "completed", "running"), Settlement.TERM),
        (UndecodableError("too deep"), Settlement.TERM),
        (_validation_error(), Settlement.TERM),
        (SupersededError("fenced"), Settlement.LEAVE),
    ],
)
def test_the_error_decides_the_settlement(error: Exception, expected: Settlement) -> None:
    """Retryable (or silent) errors nak, contract breaks terminate, a superseded one is left."""
    assert settlement_for(error) is expected


async def _run(message: FakeMessage, sink: FakeSink, error: Exception | None) -> None:
    async def work() -> None:
        if error is not None:
            raise error

    await Settler(sink, nak_delay_s=0.25).run(message, work())  # type: ignore[arg-type]


async def test_success_acks_and_a_retryable_error_naks_with_the_one_delay() -> None:
    """A handler that returns is acked; a retryable error is naked with `nak_delay_s`."""
    ok, retry = FakeMessage("hive.events.t.step"), FakeMessage("hive.events.t.step")
    await _run(ok, FakeSink(), None)
    await _run(retry, FakeSink(), RetryableError("race"))
    assert ok.settled == ["ack"]
    assert (retry.settled, retry.delay) == (["nak"], 0.25)


async def test_unrecoverable_work_is_terminated_and_dead_lettered_once() -> None:
    """Work that can never apply is terminated and goes to the DLQ with its body and error."""
    body = json.dumps({"task_id": "t-1", "subtask_id": "a"}).encode()
    message, sink = FakeMessage(subjects.work("writer"), body), FakeSink()
    await _run(message, sink, IllegalTransitionError("sub-task", "completed", "running"))
    assert message.settled == ["term"]
    (letter,) = sink.published
    assert isinstance(letter, DeadLetter)
    assert (letter.task_id, letter.why, letter.event_id) == ("t-1", "unrecoverable", "WORK-7")
    assert letter.original == {"subject": "hive.work.writer", "body": json.loads(body)}
    assert "illegal sub-task transition" in letter.errors[0]


async def test_an_unrecoverable_event_is_terminated_without_a_dead_letter() -> None:
    """Events and controls that can never apply are terminated and logged, not dead-lettered."""
    message, sink = FakeMessage("hive.events.t.subtask_finished"), FakeSink()
    await _run(message, sink, _validation_error())
    assert (message.settled, sink.published) == (["term"], [])


async def test_a_superseded_message_is_left_for_its_new_holder() -> None:
    """A fenced worker neither acks nor naks: the worker that took over settles the message."""
    message = FakeMessage(subjects.work("writer"))
    await _run(message, FakeSink(), SupersededError("fenced"))
    assert message.settled == []


async def test_a_dead_letter_that_cannot_be_published_still_terminates() -> None:
    """The bus refusing the dead letter does not leave a poison message to be redelivered."""
    message = FakeMessage(subjects.SUBMIT, b"[[[")
    await _run(message, FakeSink(down=True), UndecodableError("not JSON"))
    assert message.settled == ["term"]
