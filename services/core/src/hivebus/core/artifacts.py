"""Contents too large for one message: stored whole in the `artifacts` object store.

A message over the server's `max_payload` travels as its *small version*: the big part goes
to the object store under a name derived from the message (so a retry overwrites the same
object), and the message keeps a reference to it and a preview.

    TaskFinished      the whole event at `<task>/result.json`; `result_ref` set, `output` a
                      preview, `subtasks` only those that did not complete (outputs dropped),
                      as far as they fit
    SubTaskFinished   the output at `<task>/<subtask>/<attempt>/output.json`; `output_ref` set,
                      `output` a preview
    StepRecorded      `{"input", "output"}` at `<task>/<subtask>/<attempt>/step-<run>-<n>.json`;
                      `content_ref` set, `input` and `output` previews

Errors (all `CoreError`s, none retryable: no redelivery makes a payload smaller):

    PayloadTooLargeError        a message over the limit that cannot travel by reference
    └── ArtifactRefusedError    the object store refused the content for good
    ArtifactNotFoundError       no object by that name
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import APIError, BucketNotFoundError, ObjectNotFoundError
from nats.js.object_store import ObjectStore
from pydantic import BaseModel, TypeAdapter

from hivebus.contracts import StepRecorded, SubTaskFinished, SubTaskStatus, TaskFinished, subjects
from hivebus.core.errors import CoreError

PREVIEW_CHARS = 2_000
"""How much of a content passed by reference its message still carries."""

MAX_OBJECT_BYTES = 64 * 1024 * 1024
"""The largest content the store takes; anything larger ends what produced it, once."""

REFUSED_FOR_GOOD = frozenset({10023, 10054, 10077})
"""JetStream error codes that no retry changes: insufficient resources, a message over the
stream's maximum, the store failing the write (its bytes or messages limit reached)."""


class PayloadTooLargeError(CoreError):
    """A message over the bus's payload limit that cannot be passed by reference."""


class ArtifactRefusedError(PayloadTooLargeError):
    """The object store refused a content for good (too large for it, or no room left)."""


class ArtifactNotFoundError(CoreError):
    """No object of that name in the store: expired, deleted, or never written."""


class Artifacts:
    """Objects of the `artifacts` store by name: `put` overwrites, so a retry is harmless."""

    def __init__(self, js: JetStreamContext, max_object_bytes: int | None = None) -> None:
        """Store through `js`; refuse contents over `max_object_bytes` (`MAX_OBJECT_BYTES`)."""
        self.js = js
        self.max_object_bytes = max_object_bytes or MAX_OBJECT_BYTES
        self._store: ObjectStore | None = None

    async def _bucket(self) -> ObjectStore:
        if self._store is None:
            try:
                self._store = await self.js.object_store(subjects.ARTIFACTS_BUCKET)
            except BucketNotFoundError as exc:
                raise ArtifactRefusedError(
                    f"the payload could not be stored: there is no {subjects.ARTIFACTS_BUCKET!r} "
                    "object store (provision the bus: it is created with the streams)"
                ) from exc
        return self._store

    async def put(self, name: str, data: bytes) -> None:
        """Store `data` as `name`, replacing what was there.

        Raises:
            ArtifactRefusedError: too large, or refused by the server for good.
            nats.errors.Error: the bus is unreachable (retryable).
        """
        if len(data) > self.max_object_bytes:
            raise ArtifactRefusedError(
                f"the payload could not be stored: {name} is {len(data)} bytes, over the "
                f"{self.max_object_bytes} bytes an artifact may have"
            )
        store = await self._bucket()
        try:
            await store.put(name, data)
        except APIError as exc:
            if exc.err_code not in REFUSED_FOR_GOOD:
                raise
            raise ArtifactRefusedError(
                f"the payload could not be stored: the object store refused {name} "
                f"({len(data)} bytes): {exc.description or exc}"
            ) from exc

    async def get(self, name: str) -> bytes:
        """The content stored as `name`.

        Raises:
            ArtifactNotFoundError: nothing is stored under `name`.
        """
        store = await self._bucket()
        try:
            result = await store.get(name)
        except ObjectNotFoundError as exc:
            raise ArtifactNotFoundError(f"no artifact {name!r}") from exc
        return bytes(result.data or b"")

    async def get_json(self, name: str) -> Any:
        """The JSON value stored as `name`."""
        return json.loads(await self.get(name))


# -- the small version of a message (pure) -----------------------------------------------


@dataclass(frozen=True)
class Offload:
    """A message made small: the content to store, its name, and the message that travels."""

    name: str
    content: bytes
    message: BaseModel


def preview(value: Any, chars: int = PREVIEW_CHARS) -> str | None:
    """The beginning of `value`: its text, or its JSON, cut at `chars` characters."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text[:chars]


_ANY: TypeAdapter[Any] = TypeAdapter(Any)


def _json(value: Any) -> bytes:
    """`value` as JSON, serialized as its event would serialize it."""
    return _ANY.dump_json(value)


def offload(message: BaseModel, body: bytes, budget: int) -> Offload | None:
    """The small version of `message` (serialized as `body`) for a bus that takes `budget` bytes.

    None when hivebus has no small version of this kind of message. The small version may
    still be over `budget` (a huge reason, say): the caller checks.
    """
    if isinstance(message, TaskFinished):
        return _task_finished(message, body, budget)
    if isinstance(message, SubTaskFinished):
        return _subtask_finished(message)
    if isinstance(message, StepRecorded):
        return _step_recorded(message)
    return None


def _subtask_finished(message: SubTaskFinished) -> Offload:
    name = subjects.artifact_name(
        message.task_id, message.subtask_id, message.attempt, "output.json"
    )
    small = message.model_copy(update={"output": preview(message.output), "output_ref": name})
    return Offload(name, _json(message.output), small)


def _step_recorded(message: StepRecorded) -> Offload:
    step = f"step-{message.run_id}-{message.step}.json"
    name = subjects.artifact_name(message.task_id, message.subtask_id, message.attempt, step)
    content = _json({"input": message.input, "output": message.output})
    small = message.model_copy(
        update={
            "input": preview(message.input),
            "output": preview(message.output),
            "content_ref": name,
        }
    )
    return Offload(name, content, small)


def _task_finished(message: TaskFinished, body: bytes, budget: int) -> Offload:
    """The whole event is stored; what travels keeps the sub-tasks that did not complete."""
    name = subjects.artifact_name(message.task_id, "result.json")
    small = message.model_copy(
        update={"output": preview(message.output), "subtasks": [], "result_ref": name}
    )
    size = len(small.model_dump_json().encode())
    kept = []
    for summary in message.subtasks:
        if summary.status is SubTaskStatus.COMPLETED:
            continue
        trimmed = summary.model_copy(update={"output": None})
        cost = len(trimmed.model_dump_json().encode()) + 1  # and a comma
        if size + cost > budget:
            break
        kept.append(trimmed)
        size += cost
    return Offload(name, body, small.model_copy(update={"subtasks": kept}))
