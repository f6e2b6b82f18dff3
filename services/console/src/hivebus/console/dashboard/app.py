"""The dashboard's ASGI app: the JSON API under `/api`, the page and its files, the guard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from hivebus.console.dashboard import routes_ops, routes_tasks
from hivebus.console.dashboard.errors import EXCEPTION_HANDLERS, ApiError
from hivebus.console.dashboard.openapi import openapi
from hivebus.console.dashboard.security import Guard
from hivebus.console.dashboard.state import Dashboard
from hivebus.core import Settings

STATIC = Path(__file__).parent / "static"
"""The page: index.html, its scripts and styles (no build step, nothing from elsewhere)."""


async def page(_: Request) -> Response:
    """The page itself, or a 503 saying the page files are missing from the package."""
    index = STATIC / "index.html"
    if not index.is_file():
        raise ApiError(503, f"the dashboard page is missing: no {index}")
    return FileResponse(index, headers={"cache-control": "no-cache"})


async def schema(_: Request) -> Response:
    """The OpenAPI document."""
    return JSONResponse(openapi())


ROUTES = [
    Route("/", page, methods=["GET"]),
    Route("/healthz", routes_tasks.healthz, methods=["GET"]),
    Route("/api/openapi.json", schema, methods=["GET"]),
    Route("/api/config", routes_tasks.config, methods=["GET"]),
    Route("/api/tasks", routes_tasks.tasks, methods=["GET"]),
    Route("/api/tasks/{task_id}", routes_tasks.task, methods=["GET"]),
    Route("/api/tasks/{task_id}/events", routes_tasks.task_events_page, methods=["GET"]),
    Route("/api/tasks/{task_id}/stream", routes_tasks.task_stream, methods=["GET"]),
    Route("/api/approvals", routes_ops.approvals, methods=["GET"]),
    Route("/api/approvals/{approval_id}", routes_ops.decide, methods=["POST"]),
    Route("/api/dlq", routes_ops.dlq, methods=["GET"]),
    Route("/api/dlq/{seq}", routes_ops.dead_letter, methods=["GET"]),
    Route("/api/dlq/{seq}/replay", routes_ops.replay, methods=["POST"]),
    Route("/api/stats", routes_ops.stats, methods=["GET"]),
]
"""Every route; `openapi` documents each one."""


def create_app(
    settings: Settings,
    url: str,
    *,
    host: str | None = None,
    keepalive_s: float = 15.0,
    decide_wait_s: float = 15.0,
) -> Starlette:
    """The dashboard of the bus at `url`, as served on `host` (the settings' by default).

    `host` decides whether decisions need the token (off loopback they do). The app connects
    to the bus when it starts (its lifespan) and disconnects when it stops.
    """
    listen = host or settings.dashboard_host
    dashboard = Dashboard(
        settings, url, listen, keepalive_s=keepalive_s, decide_wait_s=decide_wait_s
    )

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        dashboard.start()
        try:
            yield
        finally:
            await dashboard.stop()

    app = Starlette(
        routes=[
            *ROUTES,
            Mount("/static", app=StaticFiles(directory=STATIC, check_dir=False), name="static"),
        ],
        middleware=[Middleware(Guard, token=dashboard.token, host=listen)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.dashboard = dashboard
    return app
