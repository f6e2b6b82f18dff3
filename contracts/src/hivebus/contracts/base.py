"""The fields every event carries, apart from the events themselves (which import it)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from hivebus.contracts.ids import Identifier

SCHEMA_VERSION = 1
"""Bumped on any incompatible change to an event model."""


def _new_event_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(default_factory=_new_event_id, description="Unique id of this event.")
    task_id: Identifier = Field(description="The task this event belongs to.")
    ts: datetime = Field(default_factory=_now, description="When the event was created (UTC).")
    schema_version: int = Field(default=SCHEMA_VERSION, description="Version of the event schema.")
