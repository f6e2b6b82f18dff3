"""JSON Schemas of the contracts, so clients in any language can produce and check events."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from hivebus.contracts.events import EVENT_MODELS
from hivebus.contracts.plan import Plan


def json_schemas() -> dict[str, dict[str, Any]]:
    """Return `{file name: JSON Schema}` for every event model and the plan."""
    models: tuple[type[BaseModel], ...] = (*EVENT_MODELS, Plan)
    return {f"{model.__name__}.json": model.model_json_schema() for model in models}
