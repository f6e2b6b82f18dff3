"""The plan: a DAG of sub-tasks, as a client writes it or a planner produces it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from hivebus.contracts.ids import Identifier, RoleName
from hivebus.contracts.limits import Limits

MAX_SUBTASKS = 10_000
"""Upper bound on the size of one plan; bigger plans are rejected, not half-run."""


class SubTaskSpec(BaseModel):
    """One node of the plan: what one agent role must do, after which other nodes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Identifier = Field(description="Unique within the plan; letters, digits, `_` and `-`.")
    role: RoleName = Field(description="The agent role that runs this sub-task.")
    prompt: str = Field(min_length=1, max_length=100_000, description="What the agent must do.")
    input: dict[str, Any] = Field(
        default_factory=dict, description="Extra structured input handed to the agent as is."
    )
    kind: str | None = Field(
        default=None,
        max_length=64,
        description="What sort of work this is; a role's `routes` pick its model by kind.",
    )
    depends_on: list[Identifier] = Field(
        default_factory=list, description="Ids of sub-tasks whose outputs this one needs."
    )
    limits: Limits | None = Field(
        default=None, description="Per-run limits; the role's defaults when absent."
    )
    model: str | None = Field(
        default=None,
        description="A model route (`anthropic:NAME`, `scripted:FILE`), allowed only if the "
        "role's `allow_models` matches it.",
    )
    output_schema: dict[str, Any] | None = Field(
        default=None, description="JSON Schema the final answer must satisfy."
    )


class Plan(BaseModel):
    """A dependency-ordered set of sub-tasks; validated by the orchestrator before it runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subtasks: list[SubTaskSpec] = Field(
        min_length=1, max_length=MAX_SUBTASKS, description="The nodes of the DAG."
    )
