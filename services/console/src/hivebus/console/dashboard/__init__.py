"""The dashboard: every task's DAG, steps and events in a browser, live; approvals answered there.

An ASGI app (Starlette, served by uvicorn) that reads only the bus: TASKS and EVENTS feed an
in-memory tasks index (`index`, `feed`), one task's page comes from KV `tasks` (`detail`,
laid out by grandalf in `layout`), its events from EVENTS (`events`, live as Server-Sent
Events), and decisions and replays go the CLI's way (`routes_ops`). `security` holds the
token and loopback rules, `openapi` the API's document, `server` the embedding in a running
event loop, `command` the `hivebus dashboard` command.
"""

from hivebus.console.dashboard.app import create_app
from hivebus.console.dashboard.server import DashboardBindError, DashboardServer

__all__ = ["DashboardBindError", "DashboardServer", "create_app"]
