"""Serving the dashboard with uvicorn inside a running event loop, beside other services.

`async with DashboardServer(settings, url) as server: server.url` binds the socket first (so a
port in use is a clear `DashboardBindError`, and port 0 gets a free port whose number is
known), then runs uvicorn on it as a task. Signals stay with the caller: `hivebus up` stops
every service on one Ctrl-C, so uvicorn does not take SIGINT for itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from types import TracebackType
from typing import Self

import uvicorn
from starlette.applications import Starlette

from hivebus.console.dashboard.app import create_app
from hivebus.console.dashboard.state import Dashboard
from hivebus.core import Settings

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
GRACEFUL_S = 1
"""Open live streams never end by themselves: they get this long at shutdown."""


class DashboardBindError(Exception):
    """The dashboard cannot listen where it was told to."""


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers (the command that runs it has them)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave signals alone."""
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port`, or `DashboardBindError` saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family, backlog=128)
    except OSError as exc:
        raise DashboardBindError(
            f"the dashboard cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "choose another with --port / HIVEBUS_DASHBOARD_PORT or --host / "
            "HIVEBUS_DASHBOARD_HOST"
        ) from exc


def url_of(host: str, port: int) -> str:
    """The address a browser opens."""
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    return f"http://{shown}:{port}/"


class DashboardServer:
    """The dashboard of the bus at `url`, listening on `host:port` while in `async with`."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        *,
        host: str | None = None,
        port: int | None = None,
        keepalive_s: float = 15.0,
        decide_wait_s: float = 15.0,
    ) -> None:
        """Listen on `host`/`port` (default: the settings' dashboard host and port)."""
        self.host = host or settings.dashboard_host
        self.port = settings.dashboard_port if port is None else port
        self.app: Starlette = create_app(
            settings, url, host=self.host, keepalive_s=keepalive_s, decide_wait_s=decide_wait_s
        )
        self.url = ""
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def dashboard(self) -> Dashboard:
        """The app's state."""
        found: Dashboard = self.app.state.dashboard
        return found

    async def __aenter__(self) -> Self:
        """Bind, start uvicorn, wait until it accepts connections."""
        sock = bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        self.url = url_of(self.host, self.port)
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=GRACEFUL_S,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while not self._server.started:
            if self._task.done() or loop.time() > deadline:
                await self.__aexit__(None, None, None)
                raise DashboardBindError(f"the dashboard did not start on {self.url}")
            await asyncio.sleep(0.02)
        return self

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until the dashboard has reached the bus and read the streams.

        Raises:
            TimeoutError: not within `timeout_s`.
        """
        await asyncio.wait_for(self.dashboard.ready.wait(), timeout_s)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop uvicorn (open streams are cut after a second)."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT_S)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        except (Exception, SystemExit):  # noqa: BLE001, S110 - it is stopping either way
            pass
        self._server = None
        self._task = None
