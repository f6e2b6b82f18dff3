"""Liveness of a `serve` process, for a container's health check (`hivebus health`).

While it runs, `serve` rewrites a small JSON file (HIVEBUS_HEALTH_FILE) every `BEAT_S` seconds,
but only after its probe answered: the broker's connection to the server (a ping), or for the
dashboard, its feed having read the streams. `hivebus health` reads the file: healthy when it was
written within `STALE_S` seconds by a process that is still alive. A process that hangs, lost the
server, or died stops the file from being rewritten, so the check fails within `STALE_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from hivebus.core import get_logger

log = get_logger(__name__)

BEAT_S = 5.0
"""How often a healthy process rewrites its health file."""
STALE_S = 30.0
"""A health file older than this says the process is not healthy."""
PROBE_TIMEOUT_S = 3.0

Probe = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class Health:
    """What `hivebus health` concluded, and why."""

    healthy: bool
    why: str


def _write(path: Path, service: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(
        json.dumps({"service": service, "pid": os.getpid(), "at": time.time()}),
        encoding="utf-8",
    )
    partial.replace(path)  # readers never see half a file


async def _beat(path: Path, service: str, probe: Probe) -> None:
    while True:
        try:
            ok = await asyncio.wait_for(probe(), PROBE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a failed probe is an unhealthy beat
            ok = False
            log.warning("health_probe_failed", error=repr(exc))
        if ok:
            try:
                _write(path, service)
            except OSError as exc:
                log.warning("health_file_unwritable", path=str(path), error=str(exc))
        await asyncio.sleep(BEAT_S)


@contextlib.asynccontextmanager
async def heartbeat(path: Path | None, service: str, probe: Probe) -> AsyncIterator[None]:
    """Rewrite `path` while in the block and `probe` answers; remove it on leaving."""
    if path is None:
        yield
        return
    task = asyncio.create_task(_beat(path, service, probe))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(OSError):
            path.unlink()  # noqa: ASYNC240 - one tiny local file, on the way out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def check(path: Path, now: float | None = None) -> Health:
    """Whether the process that writes `path` is healthy."""
    try:
        beat = json.loads(path.read_text(encoding="utf-8"))
        service, pid, at = str(beat["service"]), int(beat["pid"]), float(beat["at"])
    except FileNotFoundError:
        return Health(
            healthy=False, why=f"no health file at {path}: the service has not come up (yet)"
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Health(healthy=False, why=f"the health file {path} cannot be read: {exc}")
    age = (time.time() if now is None else now) - at
    if not _alive(pid):
        return Health(healthy=False, why=f"{service} (pid {pid}) is gone")
    if age > STALE_S:
        return Health(
            healthy=False,
            why=f"{service} (pid {pid}) last answered {age:.0f}s ago (more than {STALE_S:g}s)",
        )
    return Health(healthy=True, why=f"{service} (pid {pid}) answered {max(age, 0):.0f}s ago")
