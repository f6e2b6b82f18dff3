"""What every test gets: a clean environment, no network off this machine, a real nats-server.

Hygiene, for the whole session, from `pytest_configure` on (before any test module is
imported): every `ANTHROPIC_*` and `HIVEBUS_*` variable is removed from `os.environ`, so
neither a test nor `Settings()` inside one reads the developer's keys, endpoints or settings;
and `hivetest.NETWORK_GUARD` refuses connections and name lookups off loopback, raising
`NetworkGuardError` at the call and failing the test that made one, even if something
caught the error.

Each test gets its own nats-server (port 0, temporary store): hivebus's stream and bucket
names are fixed by the contracts, so a server per test is the isolation that keeps tests
independent; starting one takes a fraction of a second.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hivetest import NETWORK_GUARD, SCRUBBED_PREFIXES, scrub_environment

from hivebus.core import EmbeddedNats, Settings

_scrubbed: list[str] = []


def pytest_configure(config: pytest.Config) -> None:  # noqa: ARG001 - the hook's signature
    """Scrub the environment and install the network guard for the whole session."""
    _scrubbed.extend(scrub_environment())
    NETWORK_GUARD.install()


def pytest_report_header() -> list[str]:
    """Say which variables the session removed, so a surprised developer knows why."""
    names = ", ".join(_scrubbed) or "none set"
    prefixes = "/".join(p.rstrip("_") for p in SCRUBBED_PREFIXES)
    return [f"hygiene: {prefixes} variables removed from the environment: {names}"]


@pytest.fixture(autouse=True)
def _no_network_off_this_machine() -> Iterator[None]:
    """Fail the test if it tried to reach an address off loopback, even if it caught the error."""
    NETWORK_GUARD.take()
    yield
    refused = NETWORK_GUARD.take()
    if refused:
        pytest.fail(f"the test tried to reach the network: {', '.join(refused)}")


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
