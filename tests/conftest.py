"""Fixtures shared by every test: a real nats-server per test, and test configurations.

Each test gets its own nats-server (port 0, temporary store): hivebus's stream and bucket
names are fixed by the contracts, so a server per test is the isolation that keeps tests
independent; starting one takes a fraction of a second.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from hivebus.core import EmbeddedNats, HivebusConfig, Settings, load_config

REPO = Path(__file__).resolve().parent.parent
HIVEBUS = REPO / ".venv" / "bin" / "hivebus"


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A real nats-server with JetStream, on a free port, storing in the test's tmp_path."""
    server = EmbeddedNats(tmp_path / "nats")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def settings(nats_server: EmbeddedNats) -> Settings:
    """Settings pointing at the test's server, with short timings so crashes recover fast."""
    return Settings(
        nats_url=nats_server.url,
        orchestrator_ack_wait_s=2.0,
        work_ack_wait_s=5.0,
        heartbeat_s=1.0,
    )


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
