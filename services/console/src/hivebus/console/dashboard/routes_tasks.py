"""Routes that read tasks: the list, one task, its events, its live stream; config, health."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from hivebus.console.dashboard import events as task_events
from hivebus.console.dashboard.errors import ApiError
from hivebus.console.dashboard.index import CursorError
from hivebus.console.dashboard.state import MAX_STREAMS, Dashboard
from hivebus.contracts import is_identifier


def dashboard_of(request: Request) -> Dashboard:
    """The app's `Dashboard`."""
    found: Dashboard = request.app.state.dashboard
    return found


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """Query parameter `name` as an int in `[low, high]`, or 400 naming it."""
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{name}: {text!r} is not a whole number") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name}: {value} is not between {low} and {high}")
    return value


def task_id_of(request: Request, name: str = "task_id") -> str:
    """A task id from the path or query, or 400 (it becomes part of subjects and keys)."""
    value = request.path_params.get(name) or request.query_params.get(name) or ""
    if not is_identifier(value):
        raise ApiError(400, f"{name}: {value!r} is not a task id (letters, digits, _ and -)")
    return value


async def healthz(request: Request) -> Response:
    """200 `{"ok": true}` once the bus is reached and the streams are read; else 503."""
    dashboard = dashboard_of(request)
    if not dashboard.ready.is_set():
        return JSONResponse({"ok": False, "error": dashboard.problem}, status_code=503)
    return JSONResponse({"ok": True})


async def config(request: Request) -> Response:
    """What the page needs to know of the dashboard's settings (nothing secret)."""
    dashboard = dashboard_of(request)
    return JSONResponse(
        {
            "trace_url": dashboard.settings.trace_url,
            "token_required": dashboard.token is not None,
            "decisions_allowed": dashboard.decisions_allowed,
        }
    )


async def tasks(request: Request) -> Response:
    """A page of the tasks list, newest first."""
    dashboard = dashboard_of(request)
    dashboard.client  # noqa: B018 - 503 until the index is read
    status = request.query_params.get("status") or None
    limit = int_param(request, "limit", 50, 1, 500)
    cursor = request.query_params.get("cursor") or None
    try:
        return JSONResponse(dashboard.index.page(status, limit, cursor))
    except (CursorError, ValueError) as exc:
        raise ApiError(400, str(exc)) from exc


async def task(request: Request) -> Response:
    """One task: plan, statuses, usage against budget, output, trace link, DAG layout."""
    task_id = task_id_of(request)
    found = await dashboard_of(request).details.detail(task_id)
    if found is None:
        raise ApiError(404, f"no task {task_id}: nothing was submitted with that id")
    return JSONResponse(found)


def _known(request: Request, task_id: str) -> None:
    dashboard = dashboard_of(request)
    dashboard.client  # noqa: B018 - 503 until the index is read
    if task_id not in dashboard.index.entries:
        raise ApiError(404, f"no task {task_id}: nothing was submitted with that id")


def _after(request: Request) -> int:
    after = int_param(request, "after", 0, 0, 2**63)
    last_id = request.headers.get("last-event-id", "").strip()
    if last_id:
        if not last_id.isdigit():
            raise ApiError(400, f"Last-Event-ID: {last_id!r} is not an event sequence")
        after = max(after, int(last_id))
    return after


async def task_events_page(request: Request) -> Response:
    """The task's events after `after`, oldest first, at most `limit`."""
    task_id = task_id_of(request)
    limit = int_param(request, "limit", task_events.DEFAULT_LIMIT, 1, task_events.MAX_LIMIT)
    after = int_param(request, "after", 0, 0, 2**63)
    _known(request, task_id)
    js = await dashboard_of(request).js()
    return JSONResponse(await task_events.read_rows(js, task_id, after, limit))


async def task_stream(request: Request) -> Response:
    """The task's events as Server-Sent Events, live, from `after` or `Last-Event-ID`."""
    task_id = task_id_of(request)
    after = _after(request)
    _known(request, task_id)
    dashboard = dashboard_of(request)
    if dashboard.streams >= MAX_STREAMS:
        raise ApiError(503, f"{MAX_STREAMS} live streams are open; close a tab and retry")
    js = await dashboard.js()

    async def body() -> AsyncIterator[str]:
        dashboard.streams += 1
        try:
            async for chunk in task_events.live(js, task_id, after, dashboard.keepalive_s):
                yield chunk
        finally:
            dashboard.streams -= 1

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )
