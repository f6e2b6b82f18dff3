"""Helpers shared by the test suites (imported as `hivetest`; `tests/` is on the path).

Configuration and scripted-model files (`write_config`, `write_script`), the environment of a
child `hivebus` process (`process_env`), provisioning a test's server (`provision_bus`), a
fake clock (`FakeClock`), and the suite's hygiene: `SCRUBBED_PREFIXES` and `NETWORK_GUARD`,
which `conftest.py` applies to the whole session.

Kept out of conftest.py so that `from hivetest import ...` always means this module, whatever
other conftest.py files pytest has imported first.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from hivebus.contracts import subjects
from hivebus.core import HivebusConfig, Settings, jetstream, load_config, new_broker
from hivebus.core.topology import provision

REPO = Path(__file__).resolve().parent.parent
HIVEBUS = REPO / ".venv" / "bin" / "hivebus"

SCRUBBED_PREFIXES = ("ANTHROPIC_", "HIVEBUS_", "OTEL_")
"""Environment variables no test may see: the developer's keys, endpoints and settings."""

LOCAL_NAMES = frozenset({"localhost", "localhost.", "localhost.localdomain"})
"""Host names that always mean this machine."""


def write_config(directory: Path, roles: dict[str, dict[str, object]]) -> HivebusConfig:
    """Write a hivebus.yaml with these roles into `directory` and load it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "hivebus.yaml"
    path.write_text(yaml.safe_dump({"workspace": "workspace", "roles": roles}), encoding="utf-8")
    return load_config(path)


def write_script(
    directory: Path, name: str, turns: list[dict[str, object]] | dict[str, object]
) -> str:
    """Write a scripted model file and return its `scripted:` route (absolute path).

    `turns` is a list of turns, or `{cases: [...]}` (see `hivebus.agent.models.scripted`).
    """
    path = directory / name
    path.write_text(yaml.safe_dump(turns), encoding="utf-8")
    return f"scripted:{path}"


def process_env(**extra: str) -> dict[str, str]:
    """Environment for a child `hivebus` process: no `SCRUBBED_PREFIXES`, JSON logs, `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_PREFIXES)}
    env.update({"HIVEBUS_LOG_FORMAT": "json", **extra})
    return env


def scrub_environment() -> list[str]:
    """Remove every `SCRUBBED_PREFIXES` variable from `os.environ`; return the names removed."""
    removed = sorted(key for key in os.environ if key.startswith(SCRUBBED_PREFIXES))
    for key in removed:
        del os.environ[key]
    return removed


async def provision_bus(url: str, settings: Settings, roles: Sequence[str] = ()) -> None:
    """Create every stream, bucket and consumer on the server at `url`, as the services do.

    The same as `hivebus.console.stack.provision_all`, without importing every service.
    """
    broker = new_broker(url, "test-provision", settings)
    try:
        await provision(await jetstream(broker), settings, list(roles))
    finally:
        await broker.stop()


class TaskEvents:
    """Every event of one task as stored in EVENTS (an ordered consumer), with bounded waits."""

    def __init__(self, wait_s: float = 30.0) -> None:
        """Nothing read yet; `wait` gives up after `wait_s`."""
        self.seen: list[dict[str, Any]] = []
        self.wait_s = wait_s
        self._changed = asyncio.Condition()

    async def follow(self, js: JetStreamContext, task_id: str) -> None:
        """Read every event of `task_id`, from the first one."""

        async def on(msg: Any) -> None:
            async with self._changed:
                self.seen.append(json.loads(msg.data))
                self._changed.notify_all()

        await js.subscribe(
            subjects.events_of(task_id),
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            cb=on,
        )

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The events of one kind so far."""
        return [e for e in self.seen if e["kind"] == kind]

    async def wait(
        self, kind: str, where: Callable[[dict[str, Any]], bool] = lambda _: True, count: int = 1
    ) -> list[dict[str, Any]]:
        """The first `count` events of `kind` matching `where`, waited for (bounded)."""
        async with asyncio.timeout(self.wait_s), self._changed:
            while len(found := [e for e in self.of(kind) if where(e)]) < count:
                await self._changed.wait()
        return found[:count]


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


class NetworkGuardError(RuntimeError):
    """A test tried to reach an address off this machine.

    Not an `OSError`, so code that retries network failures does not swallow it.
    """


def _host_text(host: object) -> str:
    return host.decode(errors="replace") if isinstance(host, bytes) else str(host)


def _address(host: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """`host` as an IP address (IPv4-mapped IPv6 as IPv4), None when it is a name."""
    try:
        address = ipaddress.ip_address(_host_text(host).split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_local_host(host: object) -> bool:
    """Whether `host` (a name or an address literal) can only mean this machine."""
    if host is None or _host_text(host).lower() in {"", *LOCAL_NAMES}:
        return True
    address = _address(host)
    return address is not None and (address.is_loopback or address.is_unspecified)


class NetworkGuard:
    """Refuses, and remembers, every connection or name lookup a test makes off this machine.

    Loopback (127.0.0.0/8, ::1, `localhost`), unix sockets and other non-IP families pass.
    `install` patches `socket.socket.connect`/`connect_ex` and `socket.getaddrinfo` (which
    `socket.create_connection` and asyncio resolve through) for the whole process.
    """

    def __init__(self) -> None:
        """Nothing is patched until `install`."""
        self.attempts: list[str] = []
        self._originals: dict[str, Callable[..., Any]] = {}

    def _refuse(self, what: str) -> NetworkGuardError:
        self.attempts.append(what)
        return NetworkGuardError(
            f"a test tried to reach {what}: tests may only connect to loopback (127.0.0.0/8, "
            "::1) or unix sockets; start a local fake instead"
        )

    def check_address(self, family: int, address: Any) -> None:
        """Raise `NetworkGuardError` if a socket of `family` may not connect to `address`."""
        if family not in {socket.AF_INET, socket.AF_INET6} or not isinstance(address, tuple):
            return
        if not _is_local_host(address[0]):
            raise self._refuse(f"{address[0]}:{address[1]}")

    def check_lookup(self, host: object) -> None:
        """Raise `NetworkGuardError` if resolving `host` needs a name server.

        An address literal needs none; whether it may be reached is checked at `connect`.
        """
        if not _is_local_host(host) and _address(host) is None:
            raise self._refuse(f"{host!r} (name lookup)")

    def install(self) -> None:
        """Patch the socket module (idempotent)."""
        if self._originals:
            return
        connect, connect_ex = socket.socket.connect, socket.socket.connect_ex
        getaddrinfo = socket.getaddrinfo
        self._originals = {"connect": connect, "connect_ex": connect_ex, "getaddrinfo": getaddrinfo}
        guard = self

        def guarded_connect(sock: socket.socket, address: Any) -> None:
            guard.check_address(sock.family, address)
            connect(sock, address)

        def guarded_connect_ex(sock: socket.socket, address: Any) -> int:
            guard.check_address(sock.family, address)
            return connect_ex(sock, address)

        def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            guard.check_lookup(host)
            return getaddrinfo(host, *args, **kwargs)

        socket.socket.connect = guarded_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = guarded_connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = guarded_getaddrinfo

    def take(self) -> list[str]:
        """The refused attempts since the last `take`, forgotten once returned."""
        attempts, self.attempts = self.attempts, []
        return attempts


NETWORK_GUARD = NetworkGuard()
"""The one guard of the test session, installed by `conftest.py`."""
