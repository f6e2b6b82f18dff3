"""The suite's hygiene guards (`conftest.py`): a clean environment, no network off loopback."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hivetest import NETWORK_GUARD, REPO, SCRUBBED_PREFIXES, NetworkGuardError, process_env

from hivebus.core import Settings

OFF_MACHINE = "192.0.2.1"
"""TEST-NET-1 (RFC 5737): routable nowhere, so a real attempt would hang until a timeout."""

IMMEDIATE_S = 1.0
"""A refusal by the guard takes microseconds; a real attempt at `OFF_MACHINE` takes seconds."""


def test_the_environment_holds_no_hivebus_or_anthropic_variables() -> None:
    """No `HIVEBUS_*` or `ANTHROPIC_*` variable is visible, and `Settings()` reads defaults."""
    assert [key for key in os.environ if key.startswith(SCRUBBED_PREFIXES)] == []
    settings = Settings()
    assert settings.nats_url is None
    assert settings.anthropic_api_key is None
    assert settings.anthropic_base_url is None


def test_variables_set_when_the_suite_starts_are_removed() -> None:
    """A session started with `HIVEBUS_NATS_URL` and `ANTHROPIC_API_KEY` set never sees them."""
    env = process_env(
        HIVEBUS_NATS_URL=f"nats://{OFF_MACHINE}:4222",
        HIVEBUS_LOG_LEVEL="debug",
        ANTHROPIC_API_KEY="sk-ant-not-a-real-key",
    )
    test = f"{__file__}::test_the_environment_holds_no_hivebus_or_anthropic_variables"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", test],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert "ANTHROPIC_API_KEY, HIVEBUS_LOG_FORMAT, HIVEBUS_LOG_LEVEL, HIVEBUS_NATS_URL" in (
        done.stdout
    )


def _refused(attempt: str) -> None:
    """Check that the guard recorded exactly `attempt`, and forget it (it was expected)."""
    assert NETWORK_GUARD.take() == [attempt]


def test_a_connection_off_this_machine_is_refused_at_once() -> None:
    """Connecting to a non-loopback address raises the guard's error, naming the address."""
    started = time.monotonic()
    with pytest.raises(NetworkGuardError, match=re.escape(f"{OFF_MACHINE}:80")):
        socket.create_connection((OFF_MACHINE, 80), timeout=30)
    _refused(f"{OFF_MACHINE}:80")
    with (
        socket.socket() as sock,
        pytest.raises(NetworkGuardError, match=re.escape(f"{OFF_MACHINE}:443")),
    ):
        sock.connect_ex((OFF_MACHINE, 443))
    _refused(f"{OFF_MACHINE}:443")
    assert time.monotonic() - started < IMMEDIATE_S


async def test_an_asyncio_connection_off_this_machine_is_refused() -> None:
    """Connections made by asyncio (nats-py, httpx) go through the guard too."""
    with pytest.raises(NetworkGuardError, match=re.escape(f"{OFF_MACHINE}:4222")):
        await asyncio.wait_for(asyncio.open_connection(OFF_MACHINE, 4222), timeout=30)
    _refused(f"{OFF_MACHINE}:4222")


def test_a_name_lookup_that_needs_a_name_server_is_refused() -> None:
    """Resolving a public name fails before any DNS query is sent."""
    with pytest.raises(NetworkGuardError, match=re.escape("'example.com'")):
        socket.getaddrinfo("example.com", 443)
    _refused("'example.com' (name lookup)")


def test_loopback_still_works() -> None:
    """A connection to a listener on 127.0.0.1 (and a lookup of `localhost`) is let through."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("localhost", port), timeout=5):
            pass
    assert NETWORK_GUARD.take() == []


SWALLOWS_THE_REFUSAL = """
import socket


def test_swallows() -> None:
    try:
        socket.create_connection(("192.0.2.1", 80), timeout=30)
    except Exception:
        pass
"""


def test_a_refusal_that_is_caught_still_fails_the_test(tmp_path: Path) -> None:
    """A test whose code swallows the guard's error fails anyway, naming the address."""
    (tmp_path / "test_swallow.py").write_text(SWALLOWS_THE_REFUSAL, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path,
        env={**process_env(), "PYTHONPATH": str(REPO / "tests")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"the test tried to reach the network: {OFF_MACHINE}:80" in done.stdout
