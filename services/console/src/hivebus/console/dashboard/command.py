"""`hivebus dashboard` and what `up`, `serve dashboard` and `demo --dashboard` share."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer
from rich.console import Console

from hivebus.console.dashboard.security import is_loopback
from hivebus.console.dashboard.server import DashboardBindError, DashboardServer
from hivebus.console.health import heartbeat
from hivebus.console.options import EXIT_USAGE, settings_from_env, url_or_exit
from hivebus.console.render import stderr_console
from hivebus.core import Settings

HostOption = Annotated[
    str | None,
    typer.Option(
        "--host",
        help="Address to listen on (default: $HIVEBUS_DASHBOARD_HOST or 127.0.0.1).",
        show_default=False,
    ),
]
PortOption = Annotated[
    int | None,
    typer.Option(
        "--port",
        min=0,
        max=65535,
        help="Port (default: $HIVEBUS_DASHBOARD_PORT or 8700; 0 picks a free one).",
        show_default=False,
    ),
]


def announce(console: Console, server: DashboardServer, settings: Settings) -> None:
    """Print where the dashboard is, and what a person must know about its access."""
    console.print(f"dashboard on [bold]{server.url}[/]", soft_wrap=True)
    if settings.dashboard_token is not None:
        console.print("  it needs HIVEBUS_DASHBOARD_TOKEN: open it with ?token=<the token>")
    elif not is_loopback(server.host):
        console.print(
            f"  [yellow]listening on {server.host} without HIVEBUS_DASHBOARD_TOKEN:[/] "
            "anyone who reaches it can read every task; decisions and replays are refused"
        )


async def until_signal() -> None:
    """Return on SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve_until_signal(
    settings: Settings, url: str, host: str | None, port: int | None
) -> None:
    """Run the dashboard of the bus at `url` until SIGINT/SIGTERM; exit 2 if it cannot listen.

    Healthy (`hivebus.console.health`) while its feed has read the streams.
    """
    console = stderr_console()
    try:
        async with DashboardServer(settings, url, host=host, port=port) as server:
            announce(console, server, settings)

            async def ready() -> bool:
                return server.dashboard.ready.is_set()

            async with heartbeat(settings.health_file, "dashboard", ready):
                await until_signal()
    except DashboardBindError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_USAGE) from exc


def dashboard(host: HostOption = None, port: PortOption = None) -> None:
    """Serve the dashboard of the hivebus at HIVEBUS_NATS_URL until Ctrl-C.

    Tasks with their DAG, steps and events (live), approvals, dead letters and stats, in a
    browser. Listens on 127.0.0.1 unless told otherwise; with HIVEBUS_DASHBOARD_TOKEN set,
    every API request needs the token.
    """
    settings = settings_from_env(quiet_default=False)
    url = url_or_exit(settings)
    asyncio.run(serve_until_signal(settings, url, host, port))
