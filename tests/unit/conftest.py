"""Fixtures shared by the contracts, validation and scheduler unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from hivebus.core import HivebusConfig, parse_config

HIVE_ROLES = {
    "writer": {
        "system": "You write.",
        "model": "scripted:writer.yaml",
        "allow_models": ["anthropic:claude-haiku-*"],
    },
    "reviewer": {
        "system": "You review.",
        "model": "scripted:reviewer.yaml",
        "limits": {"max_steps": 5, "max_tokens": 10_000, "max_wall_s": 60},
    },
}
"""Roles every unit test here may use: `writer` allows some models, `reviewer` none."""


@pytest.fixture(scope="session")
def hive_config() -> HivebusConfig:
    """A configuration with the roles `writer` and `reviewer`, built once."""
    return parse_config({"roles": HIVE_ROLES}, Path())
