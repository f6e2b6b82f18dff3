"""`hivebus.yaml`: roles (prompt, model, tools, tiers, limits, allowed models) and prices."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hivebus.contracts import ROLE_PATTERN, Decision, Limits, Tier, describe_validation_error
from hivebus.contracts.approvals import DEFAULT_DECISIONS
from hivebus.core.errors import ConfigError
from hivebus.core.reliability import BreakerPolicy, RetryPolicy
from hivebus.core.yamlfile import load_yaml

DEFAULT_VALIDATORS = (
    "hivebus.agent.validators.secrets:secrets",
    "hivebus.agent.validators.contacts:contact_details",
)
"""Validators a role runs when it names none: redact secrets, remove unverified contacts."""


class RoleConfig(BaseModel):
    """One kind of agent."""

    model_config = ConfigDict(extra="forbid")

    system: str = Field(description="System prompt.")
    description: str = Field(
        default="",
        max_length=2000,
        description="What the role is for, in a sentence: what a planner reads to choose it.",
    )
    model: str | list[str] = Field(
        description="Model route (`anthropic:NAME`, `scripted:FILE`), or a list: the primary "
        "first, then fallbacks tried when it is unavailable."
    )
    routes: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Model chains by sub-task `kind`; a kind not listed uses `model`.",
    )
    tools: list[str] = Field(default_factory=list, description="Tools as `module:function`.")
    tiers: list[Tier] = Field(
        default_factory=lambda: [Tier.READ], description="Tool tiers this role may use freely."
    )
    approve: list[Tier] = Field(
        default_factory=lambda: [Tier.WRITE_RISKY],
        description="Tool tiers this role may use only with a person's approval (a tier also "
        "in `tiers` is used freely); any other tier is denied.",
    )
    approve_cost_usd: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="Ask a person before a model call whose estimated cost is above this.",
    )
    approve_at_budget: float | None = Field(
        default=None,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="Ask a person before the next model call once the task has used this "
        "fraction of its token or cost budget (once per run).",
    )
    approval_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        le=30 * 86400,
        allow_inf_nan=False,
        description="How long an approval waits; no decision by then is `reject`.",
    )
    allowed_decisions: list[Decision] = Field(
        default_factory=lambda: list(DEFAULT_DECISIONS),
        min_length=1,
        description="What a person may decide about this role's tool calls.",
    )
    limits: Limits = Field(default_factory=Limits, description="Default per-run limits.")
    allow_models: list[str] = Field(
        default_factory=list, description="Glob patterns a plan's sub-task `model` may match."
    )
    concurrency: int = Field(default=4, ge=1, le=256, description="Runs at once per replica.")
    validators: list[str] = Field(
        default_factory=lambda: list(DEFAULT_VALIDATORS),
        description="Output validators as `module:function`, run before output leaves the agent.",
    )
    output_retries: int = Field(
        default=2, ge=0, le=10, description="Corrections asked for when output fails its schema."
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy, description="Transient-error retries.")
    breaker: BreakerPolicy = Field(
        default_factory=BreakerPolicy, description="Circuit breakers around models and tools."
    )

    @field_validator("allowed_decisions")
    @classmethod
    def _tool_decisions(cls, value: list[Decision]) -> list[Decision]:
        if Decision.RESPOND in value:
            msg = "`respond` answers questions (ask_human), not tool calls: leave it out"
            raise ValueError(msg)
        return value

    @field_validator("model")
    @classmethod
    def _chain_not_empty(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            msg = "give at least one model route"
            raise ValueError(msg)
        return value

    def model_chain(self, kind: str | None = None) -> list[str]:
        """The models to try in order for a sub-task of `kind`: primary, then fallbacks."""
        if kind is not None and kind in self.routes:
            return list(self.routes[kind])
        return [self.model] if isinstance(self.model, str) else list(self.model)

    def allows_model(self, route: str) -> bool:
        """Tell whether a plan may pick `route` for a sub-task of this role."""
        return any(fnmatch.fnmatchcase(route, pattern) for pattern in self.allow_models)


class Price(BaseModel):
    """USD per million tokens for one model route."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for a call that used these tokens: the one cost formula."""
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


class PlanningConfig(BaseModel):
    """How a task submitted with a goal and no plan is planned."""

    model_config = ConfigDict(extra="forbid")

    role: str = Field(default="planner", description="The role whose agent writes plans.")
    retries: int = Field(
        default=2, ge=0, le=10, description="Rejected plans sent back with their errors."
    )
    max_subtasks: int = Field(
        default=50, ge=1, le=10_000, description="The most sub-tasks a planned plan may have."
    )
    max_depth: int = Field(
        default=10, ge=1, le=10_000, description="The longest dependency chain it may have."
    )
    review: bool = Field(
        default=False,
        description="A person approves, rejects or edits each plan (and revision) before it "
        "runs, through the approvals mechanism.",
    )
    review_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        le=30 * 86_400,
        description="A plan nobody reviewed by then is rejected (the task deadline still holds).",
    )
    replan: int = Field(
        default=0,
        ge=0,
        le=10,
        description="Revised plans per task: when sub-tasks end without completing, the planner "
        "is asked for a plan of the remaining work, at most this many times (0: dependents are "
        "blocked, as without planning).",
    )


class HivebusConfig(BaseModel):
    """The whole configuration file, with relative paths resolved against `base_dir`."""

    model_config = ConfigDict(extra="forbid")

    base_dir: Path = Field(default=Path(), description="Directory of the configuration file.")
    workspace: Path = Field(
        default=Path("workspace"), description="Directory the workspace file tools are confined to."
    )
    prices: dict[str, Price] = Field(
        default_factory=dict, description="Prices by model route; glob patterns allowed."
    )
    roles: dict[str, RoleConfig] = Field(min_length=1)
    tool_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Settings tools read from their context, e.g. `http: {allow_hosts: [...]}`.",
    )
    python_paths: list[str] = Field(
        default_factory=list,
        description="Directories (relative to this file) added to the import path for tools.",
    )
    planning: PlanningConfig = Field(
        default_factory=PlanningConfig, description="Planning a task from its goal alone."
    )

    def workspace_dir(self) -> Path:
        """The workspace directory as an absolute path."""
        return (self.base_dir / self.workspace).resolve()

    def resolve_path(self, path: str) -> Path:
        """Resolve a path named in the configuration against its directory."""
        return (self.base_dir / path).resolve()

    def price_for(self, route: str) -> Price:
        """The price of a model route (exact match first, then patterns); free when unlisted."""
        if route in self.prices:
            return self.prices[route]
        for pattern, price in self.prices.items():
            if fnmatch.fnmatchcase(route, pattern):
                return price
        return Price(input_per_mtok=0.0, output_per_mtok=0.0)


def parse_config(data: Any, base_dir: Path) -> HivebusConfig:
    """Validate configuration data; raise `ConfigError` listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError("configuration must be a mapping with a `roles` key")
    try:
        config = HivebusConfig.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        problems = "; ".join(describe_validation_error(exc, "configuration"))
        raise ConfigError(f"invalid configuration: {problems}") from exc
    bad = [name for name in config.roles if re.fullmatch(ROLE_PATTERN, name) is None]
    if bad:
        raise ConfigError(f"invalid role names {bad}: use lower case letters, digits, '_' or '-'")
    planner = config.planning.role
    if config.planning.replan and planner not in config.roles:
        raise ConfigError(
            f"invalid configuration: planning.replan asks the {planner!r} role for revised "
            f"plans, and roles has no {planner!r}"
        )
    return config


def load_config(path: Path) -> HivebusConfig:
    """Read and validate a `hivebus.yaml` file."""
    data = load_yaml(path, what="configuration", error=ConfigError)
    return parse_config(data, path.resolve().parent)
