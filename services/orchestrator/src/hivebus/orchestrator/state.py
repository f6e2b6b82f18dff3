"""Task state, split so that no update rewrites a whole plan.

KV bucket `tasks`, per task:
    <task>.plan        the accepted submission (written once, never changed)
    <task>.meta        status, counts and a bitmap of finished sub-tasks (small)
    <task>.st.<id>     one sub-task: status, satisfied dependencies, output, usage
    <task>.result      the `TaskFinished` event, once the task is over

Every change goes through `update_*`, which is compare-and-set on the key's revision.
`MemoryStore` holds the same in a dict, for the scheduler's tests without a network.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field

from hivebus.contracts import (
    SubTaskStatus,
    TaskFinished,
    TaskStatus,
    TaskSubmitted,
    Usage,
    subjects,
)
from hivebus.core import kv as kvcas


def bit_is_set(bits: str, index: int) -> bool:
    """Whether bit `index` is set in a base64 bitmap."""
    raw = base64.b64decode(bits) if bits else b""
    return index // 8 < len(raw) and bool(raw[index // 8] & (1 << (index % 8)))


def set_bits(bits: str, size: int, indexes: list[int]) -> tuple[str, int]:
    """The bitmap with `indexes` set, and how many of them were not set before.

    Setting a bit twice changes nothing, which is what makes replaying an event harmless.
    """
    raw = bytearray(base64.b64decode(bits) if bits else b"")
    raw.extend(b"\0" * ((size + 7) // 8 - len(raw)))
    added = 0
    for index in indexes:
        mask = 1 << (index % 8)
        if not raw[index // 8] & mask:
            raw[index // 8] |= mask
            added += 1
    return base64.b64encode(bytes(raw)).decode(), added


class TaskMeta(BaseModel):
    """The small, often-updated part of a task's state."""

    model_config = ConfigDict(extra="forbid")

    task_id: str
    status: TaskStatus
    total: int = Field(ge=0, description="Number of sub-tasks.")
    finished_bits: str = Field(default="", description="Base64 bitmap of finished sub-tasks.")
    finished: int = Field(default=0, ge=0, description="Count of set bits.")
    submitted_at: datetime
    reason: str = ""
    ending: TaskStatus | None = Field(
        default=None, description="Set by a cancel or the deadline: how the task will end."
    )

    def is_finished(self, index: int) -> bool:
        """Whether sub-task number `index` is already counted as finished."""
        return bit_is_set(self.finished_bits, index)

    def with_finished(self, indexes: list[int]) -> TaskMeta | None:
        """A copy with these sub-tasks marked finished, or None when nothing changes."""
        bits, added = set_bits(self.finished_bits, self.total, indexes)
        if not added:
            return None
        return self.model_copy(update={"finished_bits": bits, "finished": self.finished + added})


class SubTaskState(BaseModel):
    """One sub-task's state."""

    model_config = ConfigDict(extra="forbid")

    id: str
    role: str
    status: SubTaskStatus = SubTaskStatus.PENDING
    attempt: int = 1
    deps_bits: str = Field(
        default="", description="Base64 bitmap over `depends_on` positions: which completed."
    )
    deps_done: int = Field(default=0, ge=0, description="How many dependencies completed.")
    run_id: str | None = None
    reason: str = ""
    blocked_by: str | None = None
    output: Any = None
    usage: Usage = Field(default_factory=Usage)
    flags: list[str] = Field(default_factory=list)


MetaChange = Callable[[TaskMeta | None], TaskMeta | None]
SubTaskChange = Callable[[SubTaskState | None], SubTaskState | None]


class StateStore(Protocol):
    """Where task state lives; every update is compare-and-set."""

    async def create_plan(self, submission: TaskSubmitted) -> TaskSubmitted:
        """Store the submission unless one is stored; return the stored one."""
        ...

    async def load_plan(self, task_id: str) -> TaskSubmitted | None:
        """The stored submission, or None."""
        ...

    async def read_meta(self, task_id: str) -> TaskMeta | None:
        """The task's meta, or None."""
        ...

    async def update_meta(self, task_id: str, change: MetaChange) -> TaskMeta | None:
        """Compare-and-set the meta; returns the value after."""
        ...

    async def read_subtask(self, task_id: str, subtask_id: str) -> SubTaskState | None:
        """One sub-task's state, or None."""
        ...

    async def update_subtask(
        self, task_id: str, subtask_id: str, change: SubTaskChange
    ) -> SubTaskState | None:
        """Compare-and-set one sub-task; returns the value after."""
        ...

    async def read_result(self, task_id: str) -> TaskFinished | None:
        """The task's final event, or None."""
        ...

    async def mark_cancelled(self, task_id: str) -> None:
        """Tell the task's runs to stop at their next step boundary."""
        ...

    async def create_result(self, result: TaskFinished) -> TaskFinished:
        """Store the final event unless one is stored; return the stored one."""
        ...


def _key(task_id: str, *parts: str) -> str:
    return ".".join((task_id, *parts))


class KvStore:
    """`StateStore` on the JetStream KV bucket `tasks`."""

    def __init__(self, kv: KeyValue, cas_attempts: int = 50) -> None:
        """Use `kv`; bound compare-and-set retries by `cas_attempts`."""
        self.kv = kv
        self.attempts = cas_attempts

    async def _create_once(self, key: str, value: BaseModel, model: type[Any]) -> Any:
        def keep_or_set(current: BaseModel | None) -> BaseModel | None:
            return value if current is None else None

        stored, _ = await kvcas.cas_update(self.kv, key, model, keep_or_set, self.attempts)
        return stored

    async def create_plan(self, submission: TaskSubmitted) -> TaskSubmitted:
        """See `StateStore`."""
        stored: TaskSubmitted = await self._create_once(
            _key(submission.task_id, "plan"), submission, TaskSubmitted
        )
        return stored

    async def load_plan(self, task_id: str) -> TaskSubmitted | None:
        """See `StateStore`."""
        value, _ = await kvcas.read(self.kv, _key(task_id, "plan"), TaskSubmitted)
        return value

    async def read_meta(self, task_id: str) -> TaskMeta | None:
        """See `StateStore`."""
        value, _ = await kvcas.read(self.kv, _key(task_id, "meta"), TaskMeta)
        return value

    async def update_meta(self, task_id: str, change: MetaChange) -> TaskMeta | None:
        """See `StateStore`."""
        value, _ = await kvcas.cas_update(
            self.kv, _key(task_id, "meta"), TaskMeta, change, self.attempts
        )
        return value

    async def read_subtask(self, task_id: str, subtask_id: str) -> SubTaskState | None:
        """See `StateStore`."""
        value, _ = await kvcas.read(self.kv, _key(task_id, "st", subtask_id), SubTaskState)
        return value

    async def update_subtask(
        self, task_id: str, subtask_id: str, change: SubTaskChange
    ) -> SubTaskState | None:
        """See `StateStore`."""
        value, _ = await kvcas.cas_update(
            self.kv, _key(task_id, "st", subtask_id), SubTaskState, change, self.attempts
        )
        return value

    async def read_result(self, task_id: str) -> TaskFinished | None:
        """See `StateStore`."""
        value, _ = await kvcas.read(self.kv, _key(task_id, "result"), TaskFinished)
        return value

    async def mark_cancelled(self, task_id: str) -> None:
        """See `StateStore`: the key's presence is the signal agents look for."""
        await self.kv.put(subjects.cancel_key(task_id), b"1")

    async def create_result(self, result: TaskFinished) -> TaskFinished:
        """See `StateStore`."""
        stored: TaskFinished = await self._create_once(
            _key(result.task_id, "result"), result, TaskFinished
        )
        return stored


class MemoryStore:
    """`StateStore` in a dict; counts writes so tests can pin the scheduler's cost."""

    def __init__(self) -> None:
        """Start empty."""
        self.data: dict[str, BaseModel] = {}
        self.writes = 0
        self.cancelled: set[str] = set()

    def _update(self, key: str, change: Callable[[Any], Any]) -> Any:
        current = self.data.get(key)
        copy = current.model_copy(deep=True) if current is not None else None
        updated = change(copy)
        if updated is None:
            return current
        self.data[key] = updated
        self.writes += 1
        return updated

    async def create_plan(self, submission: TaskSubmitted) -> TaskSubmitted:
        """See `StateStore`."""
        stored: TaskSubmitted = self._update(
            _key(submission.task_id, "plan"), lambda cur: submission if cur is None else None
        )
        return stored

    async def load_plan(self, task_id: str) -> TaskSubmitted | None:
        """See `StateStore`."""
        value = self.data.get(_key(task_id, "plan"))
        return value if isinstance(value, TaskSubmitted) else None

    async def read_meta(self, task_id: str) -> TaskMeta | None:
        """See `StateStore`."""
        value = self.data.get(_key(task_id, "meta"))
        return value if isinstance(value, TaskMeta) else None

    async def update_meta(self, task_id: str, change: MetaChange) -> TaskMeta | None:
        """See `StateStore`."""
        value: TaskMeta | None = self._update(_key(task_id, "meta"), change)
        return value

    async def read_subtask(self, task_id: str, subtask_id: str) -> SubTaskState | None:
        """See `StateStore`."""
        value = self.data.get(_key(task_id, "st", subtask_id))
        return value if isinstance(value, SubTaskState) else None

    async def update_subtask(
        self, task_id: str, subtask_id: str, change: SubTaskChange
    ) -> SubTaskState | None:
        """See `StateStore`."""
        value: SubTaskState | None = self._update(_key(task_id, "st", subtask_id), change)
        return value

    async def read_result(self, task_id: str) -> TaskFinished | None:
        """See `StateStore`."""
        value = self.data.get(_key(task_id, "result"))
        return value if isinstance(value, TaskFinished) else None

    async def mark_cancelled(self, task_id: str) -> None:
        """See `StateStore`."""
        self.cancelled.add(task_id)

    async def create_result(self, result: TaskFinished) -> TaskFinished:
        """See `StateStore`."""
        stored: TaskFinished = self._update(
            _key(result.task_id, "result"), lambda cur: result if cur is None else None
        )
        return stored
