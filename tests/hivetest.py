"""Helpers shared by the test suites (imported as `hivetest`; `tests/` is on the path).

Kept out of conftest.py so that `from hivetest import ...` always means this module, whatever
other conftest.py files pytest has imported first.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from hivebus.core import HivebusConfig, load_config

REPO = Path(__file__).resolve().parent.parent
HIVEBUS = REPO / ".venv" / "bin" / "hivebus"


def write_config(directory: Path, roles: dict[str, dict[str, object]]) -> HivebusConfig:
    """Write a hivebus.yaml with these roles into `directory` and load it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "hivebus.yaml"
    path.write_text(yaml.safe_dump({"workspace": "workspace", "roles": roles}), encoding="utf-8")
    return load_config(path)


def write_script(directory: Path, name: str, turns: list[dict[str, object]]) -> str:
    """Write a scripted model file and return its `scripted:` route (absolute path)."""
    path = directory / name
    path.write_text(yaml.safe_dump(turns), encoding="utf-8")
    return f"scripted:{path}"


def process_env(**extra: str) -> dict[str, str]:
    """Environment for a child `hivebus` process: no API key, quiet JSON logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "HIVEBUS_"))}
    env.update({"HIVEBUS_LOG_FORMAT": "json", **extra})
    return env


class FakeClock:
    """A clock that only moves when a test (or a `FakeSleep`) advances it."""

    def __init__(self) -> None:
        """Start at an arbitrary monotonic reading."""
        self.seconds = 1000.0

    def monotonic(self) -> float:
        """The current fake monotonic reading."""
        return self.seconds

    def now(self) -> datetime:
        """A wall time that moves with the monotonic reading."""
        return datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=self.seconds)

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.seconds += seconds
