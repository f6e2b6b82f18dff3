"""Run checkpoints: a run's whole state (`RunCheckpoint`) in KV `runs`, written after every step.

A redelivered sub-task resumes from its checkpoint, so no completed model or tool call is
repeated (a crash between a call and its checkpoint repeats that one step).

Fencing lives here. `CheckpointStore.open` takes the run over: it writes the checkpoint back
with a new owner token, which moves its revision. Every later `save` is a compare-and-set on
the revision its handle holds, so a worker that was paused past `ack_wait` while another took
the run over finds its next write refused (it is *fenced*) and stops without reporting.

    CoreError
    └── SupersededError             (hivebus.core)
        └── RunFencedError          another worker took the run over: leave the message be
    CheckpointUnavailableError      the bucket cannot be reached: retryable, nak the delivery
"""

from __future__ import annotations

import uuid

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from hivebus.contracts.runs import RunCheckpoint
from hivebus.core import SupersededError
from hivebus.core.artifacts import Artifacts, PayloadTooLargeError


class RunFencedError(SupersededError):
    """Another worker took this run over; this one must stop and report nothing."""


class CheckpointUnavailableError(Exception):
    """The checkpoint could not be read or written (the bus is down); retry the delivery."""

    retryable = True


def new_owner() -> str:
    """A token naming one delivery of a run to one worker."""
    return uuid.uuid4().hex[:12]


class RunCheckpointHandle:
    """One worker's hold on one run's checkpoint: every save is compare-and-set on its revision."""

    def __init__(  # noqa: PLR0917 - the handle's whole identity
        self,
        kv: KeyValue,
        key: str,
        owner: str,
        state: RunCheckpoint | None,
        revision: int,
        large: LargeCheckpoints | None = None,
    ) -> None:
        """Hold `key` as `owner`, last written at `revision` (0: not written yet)."""
        self.kv = kv
        self.key = key
        self.owner = owner
        self.state = state
        """The checkpoint as it was when the run was opened (None: a new run)."""
        self.revision = revision
        self.large = large

    async def save(self, state: RunCheckpoint) -> None:
        """Write `state` as this handle's owner, if nobody else wrote since.

        Raises:
            RunFencedError: someone else wrote since (another worker owns the run).
            CheckpointUnavailableError: the bucket cannot be reached.
        """
        state.owner = self.owner
        data = state.model_dump_json().encode()
        if self.large is not None and len(data) > self.large.budget:
            data = await self.large.stored(self.key, state, data)
        try:
            if self.revision == 0:
                self.revision = int(await self.kv.create(self.key, data))
            else:
                self.revision = int(await self.kv.update(self.key, data, last=self.revision))
        except KeyWrongLastSequenceError as exc:
            raise RunFencedError(f"checkpoint {self.key} was written by another worker") from exc
        except Exception as exc:
            raise CheckpointUnavailableError(str(exc)) from exc


class LargeCheckpoints:
    """Checkpoints too large for one message (a KV value is one), kept in `artifacts`."""

    def __init__(self, artifacts: Artifacts, budget: int) -> None:
        """Store checkpoints over `budget` bytes in `artifacts`."""
        self.artifacts = artifacts
        self.budget = budget

    async def stored(self, key: str, state: RunCheckpoint, data: bytes) -> bytes:
        """Put the whole checkpoint in the store; return the small one the KV keeps."""
        name = f"{key}/checkpoint.json"
        try:
            await self.artifacts.put(name, data)
        except PayloadTooLargeError:
            raise
        except Exception as exc:
            raise CheckpointUnavailableError(str(exc)) from exc
        small = RunCheckpoint(
            run_id=state.run_id,
            owner=state.owner,
            phase=state.phase,
            usage=state.usage,
            wall_s=state.wall_s,
            stored_ref=name,
        )
        return small.model_dump_json().encode()

    async def whole(self, state: RunCheckpoint) -> RunCheckpoint:
        """The checkpoint a small one stands for."""
        if state.stored_ref is None:
            return state
        try:
            data = await self.artifacts.get(state.stored_ref)
        except Exception as exc:
            raise CheckpointUnavailableError(str(exc)) from exc
        return RunCheckpoint.model_validate_json(data)


class CheckpointStore:
    """Checkpoints of runs in the `runs` bucket (large ones by reference, in `artifacts`)."""

    def __init__(self, kv: KeyValue, large: LargeCheckpoints | None = None) -> None:
        """Use the bucket `kv`; keep checkpoints too large for it in `large`."""
        self.kv = kv
        self.large = large

    async def open(self, key: str) -> RunCheckpointHandle:
        """Load the checkpoint at `key` and take the run over with a new owner token.

        An unfinished checkpoint is written back at once under the new owner, which fences
        the previous one. A finished run is nobody's to fence: it is only read.

        Raises:
            RunFencedError: another worker took the run over at the same moment.
            CheckpointUnavailableError: the bucket cannot be reached.
            pydantic.ValidationError: the stored checkpoint is not a `RunCheckpoint`.
        """
        owner = new_owner()
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return RunCheckpointHandle(self.kv, key, owner, None, 0, self.large)
        except Exception as exc:
            raise CheckpointUnavailableError(str(exc)) from exc
        if entry.value is None:
            return RunCheckpointHandle(self.kv, key, owner, None, 0, self.large)
        state = RunCheckpoint.model_validate_json(entry.value)
        if state.stored_ref is not None and self.large is not None:
            state = await self.large.whole(state)
        revision = int(entry.revision or 0)
        handle = RunCheckpointHandle(self.kv, key, owner, state, revision, self.large)
        if state.finished is None:
            await handle.save(state)
        return handle
