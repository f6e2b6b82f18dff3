"""Names the agent's spans and metrics share: providers and models from routes, a run's labels.

A model route is `<provider>:<model>`; the GenAI conventions want the provider
(`gen_ai.provider.name`) and the model (`gen_ai.request.model`) apart. Scripted models are
hivebus's own: `hivebus.scripted`. Every metric about a sub-task carries its role and its
plan `kind` (`hivebus.role`, `hivebus.subtask.kind`), read from the run being served.
"""

from __future__ import annotations

from hivebus.agent.served import CURRENT_RUN

PROVIDERS = {"scripted": "hivebus.scripted"}
"""Route prefixes whose provider name is not the prefix itself."""

ROLE = "hivebus.role"
KIND = "hivebus.subtask.kind"
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
ERROR_TYPE = "error.type"


def provider_of(route: str) -> str:
    """`gen_ai.provider.name` of a model route: `anthropic:x` -> `anthropic`."""
    prefix = route.partition(":")[0]
    return PROVIDERS.get(prefix, prefix)


def model_of(route: str) -> str:
    """`gen_ai.request.model` of a model route: what follows the provider's prefix."""
    prefix, sep, name = route.partition(":")
    return name if sep and name else prefix


def run_labels() -> dict[str, str]:
    """`hivebus.role` and `hivebus.subtask.kind` of the run being served ("" outside one)."""
    run = CURRENT_RUN.get()
    if run is None:
        return {ROLE: "", KIND: ""}
    return {ROLE: run.role, KIND: run.kind}
