"""What one role runs with, loaded once from configuration, before the service connects.

A bad configuration (unknown role, a tool or validator that cannot be imported) fails here,
at start, and never with a server in the way.
"""

from __future__ import annotations

import sys

from hivebus.agent.approvals import ApprovalPolicy
from hivebus.agent.errors import AgentError
from hivebus.agent.models import Model, ModelFactory
from hivebus.agent.replay import Replay
from hivebus.agent.toolbox import Toolbox
from hivebus.agent.validators import OutputValidator, load_validator
from hivebus.contracts import SubTaskAssigned
from hivebus.core import HivebusConfig, RoleConfig, Settings


def role_config(config: HivebusConfig, role: str) -> RoleConfig:
    """The configuration of `role`, or an `AgentError` listing the known roles."""
    found = config.roles.get(role)
    if found is None:
        raise AgentError(
            f"role {role!r} is not in the configuration; known: {sorted(config.roles)}"
        )
    return found


class RoleRuntime:
    """A role's tools (with its tier policy), approval settings, validators and model routes."""

    def __init__(
        self, settings: Settings, config: HivebusConfig, role: str, replay: Replay | None = None
    ) -> None:
        """Check the role and load its tools and validators now.

        With `replay` (a golden run), its models, and its tool answers when it has them,
        stand in for the configured ones.
        """
        self.role = role
        self.config = config
        self.role_config = role_config(config, role)
        for path in config.python_paths:
            resolved = str(config.resolve_path(path))
            if resolved not in sys.path:
                sys.path.insert(0, resolved)
        self.toolbox = Toolbox.from_refs(
            self.role_config.tools,
            self.role_config.tiers,
            approve_tiers=self.role_config.approve,
            max_abandoned_threads=settings.max_abandoned_tool_threads,
            concurrency=self.role_config.concurrency,
        )
        self.approvals = ApprovalPolicy.of(self.role_config)
        """Approval timeout, allowed decisions and spend thresholds (tiers: the toolbox)."""
        self.validators: list[OutputValidator] = [
            load_validator(ref) for ref in self.role_config.validators
        ]
        self.factory = ModelFactory(settings, config)
        self.replay = replay
        if replay is not None:
            self.toolbox.runner = replay.tool_runner(role)

    def chain(self, assignment: SubTaskAssigned) -> list[str]:
        """The model routes for `assignment`: the plan's model, else the role's chain."""
        if assignment.model:
            return [assignment.model]
        return self.role_config.model_chain(assignment.subtask_kind)

    def models(self, assignment: SubTaskAssigned) -> tuple[list[Model], list[str]]:
        """The models of the chain that could be built, and why the others could not.

        A model the plan names is built as untrusted (`from_plan`): see `ModelFactory`.
        """
        if self.replay is not None:
            replayed = self.replay.models(assignment)
            if replayed is not None:
                return replayed
        from_plan = bool(assignment.model)
        models: list[Model] = []
        problems: list[str] = []
        for route in self.chain(assignment):
            try:
                models.append(self.factory.build(route, from_plan=from_plan))
            except AgentError as exc:
                problems.append(str(exc))
        return models, problems
