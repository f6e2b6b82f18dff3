"""Run checkpoints: a run's whole state in KV `runs`, written after every step.

A redelivered sub-task resumes from its checkpoint, so no completed model or tool call is
repeated (a crash between a call and its checkpoint repeats that one step). Every write is
compare-and-set on the revision the writer last saw: a worker that was paused past
`ack_wait` while another took the run over finds its next write refused (it is *fenced*)
and stops without reporting anything.
"""

from __future__ import annotations

import uuid
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field

from hivebus.agent.models.base import Message, ToolCall, ToolOutcome
from hivebus.contracts import Usage


class RunFencedError(Exception):
    """Another worker took this run over; this one must stop and report nothing."""


class CheckpointUnavailableError(Exception):
    """The checkpoint could not be read or written (the bus is down); retry the delivery."""


class RunState(BaseModel):
    """Everything a run needs to continue where it stopped."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    owner: str = Field(description="The worker that holds the run now.")
    messages: list[Message]
    pending_calls: list[ToolCall] = Field(
        default_factory=list, description="Tool calls of the current turn not run yet."
    )
    outcomes: list[ToolOutcome] = Field(
        default_factory=list, description="Results of the current turn's calls already run."
    )
    pending_warning: str | None = None
    usage: Usage = Field(default_factory=Usage)
    wall_s: float = Field(default=0.0, ge=0, description="Wall-clock time used before now.")
    sources: list[str] = Field(default_factory=list)
    last_text: str | None = None
    corrections: int = 0
    soft_warned: list[str] = Field(default_factory=list)
    last_call: str | None = None
    repeats: int = 0
    loop_warned: bool = False
    finished: Any = Field(default=None, description="The terminal event, once decided.")


def new_owner() -> str:
    """A token naming one delivery of a run to one worker."""
    return uuid.uuid4().hex[:12]


class CheckpointStore:
    """Checkpoints of runs in the `runs` bucket, fenced by revision."""

    def __init__(self, kv: KeyValue) -> None:
        """Use the bucket `kv`."""
        self.kv = kv

    async def load(self, key: str) -> tuple[RunState | None, int]:
        """The checkpoint at `key` and its revision (None, 0 when there is none)."""
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None, 0
        except Exception as exc:
            raise CheckpointUnavailableError(str(exc)) from exc
        if entry.value is None:
            return None, 0
        return RunState.model_validate_json(entry.value), int(entry.revision or 0)

    async def save(self, key: str, state: RunState, revision: int) -> int:
        """Write `state` if `revision` is still current; returns the new revision.

        Raises:
            RunFencedError: someone else wrote since (another worker owns the run).
            CheckpointUnavailableError: the bucket cannot be reached.
        """
        data = state.model_dump_json().encode()
        try:
            if revision == 0:
                return int(await self.kv.create(key, data))
            return int(await self.kv.update(key, data, last=revision))
        except KeyWrongLastSequenceError as exc:
            raise RunFencedError(f"checkpoint {key} was written by another worker") from exc
        except Exception as exc:
            raise CheckpointUnavailableError(str(exc)) from exc
