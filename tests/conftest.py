"""Fixtures shared by every test: a real nats-server per test, and test configurations.

Each test gets its own nats-server (port 0, temporary store): hivebus's stream and bucket
names are fixed by the contracts, so a server per test is the isolation that keeps tests
independent; starting one takes a fraction of a second.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hivebus.core import EmbeddedNats, Settings


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
