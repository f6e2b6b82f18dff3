"""Limits of one run, the budget of one task, and the usage that both are measured against."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Limits(BaseModel):
    """Bounds on one run of an agent at a sub-task; every one is on by default."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_steps: int = Field(default=20, ge=1, le=10_000, description="Model calls plus tool calls.")
    max_tokens: int = Field(
        default=200_000, ge=1, description="Input plus output tokens over the whole run."
    )
    max_wall_s: float = Field(default=300.0, gt=0, description="Wall-clock seconds for the run.")
    max_tool_calls: int = Field(default=20, ge=0, le=10_000, description="Tool calls in the run.")


class TaskBudget(BaseModel):
    """Bounds on one task across all its runs and agents."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_tokens: int = Field(default=1_000_000, ge=1, description="Tokens across every run.")
    max_cost_usd: float = Field(default=10.0, ge=0, description="Cost across every run, in USD.")
    deadline_s: float = Field(
        default=3600.0, gt=0, description="Seconds from submission until the task must end."
    )


class Usage(BaseModel):
    """What a run (or a whole task) consumed."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    input_tokens: int = Field(default=0, ge=0, description="Tokens sent to models.")
    output_tokens: int = Field(default=0, ge=0, description="Tokens produced by models.")
    cost_usd: float = Field(default=0.0, ge=0, description="Cost from the configured price table.")
    steps: int = Field(default=0, ge=0, description="Model calls plus tool calls.")
    tool_calls: int = Field(default=0, ge=0, description="Tool calls.")
    wall_s: float = Field(default=0.0, ge=0, description="Wall-clock seconds.")
    retries: int = Field(default=0, ge=0, description="Retried model and tool calls.")

    @property
    def tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def add_step(
        self,
        *,
        tool_call: bool = False,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
        retries: int = 0,
    ) -> None:
        """Count one step of a run: a model call (its tokens and cost) or a tool call.

        The one place a run's usage grows; `cost_usd` is computed once, from `prices`.
        """
        self.steps += 1
        self.tool_calls += int(tool_call)
        self.retries += retries
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cost_usd = round(self.cost_usd + cost_usd, 6)

    def plus(self, other: Usage) -> Usage:
        """Return the sum of two usages (wall time adds too; callers override it for tasks)."""
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=round(self.cost_usd + other.cost_usd, 6),
            steps=self.steps + other.steps,
            tool_calls=self.tool_calls + other.tool_calls,
            wall_s=round(self.wall_s + other.wall_s, 3),
            retries=self.retries + other.retries,
        )
