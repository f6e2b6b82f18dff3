"""The API's OpenAPI 3.1 document (`GET /api/openapi.json`), written out route by route.

Request bodies are the pydantic models the routes validate with; answers are described by
the small schemas of `api_schemas`. A test checks that every route of the app is documented here.
"""

from __future__ import annotations

from typing import Any

from hivebus.console.dashboard.api_schemas import (
    ANY_VALUE,
    INT,
    NSTR,
    OBJ,
    SCHEMAS,
    STR,
    obj,
    ref,
)
from hivebus.console.dashboard.index import MAX_LIMIT, STATUS_FILTERS

_ERRORS = {
    "400": "Bad input: the message names the field.",
    "401": "The token is missing or wrong (when HIVEBUS_DASHBOARD_TOKEN is set).",
    "503": "The bus is unreachable, or the dashboard is still reading it.",
}


def _op(summary: str, ok: dict[str, Any] | None, *, codes: tuple[str, ...] = ()) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": ok}}}
        if ok is not None
        else {"description": "OK"}
    }
    for code in ("400", "401", *codes, "503"):
        responses[code] = {
            "description": _ERRORS.get(code) or _CODES[code],
            "content": {"application/json": {"schema": ref("Error")}},
        }
    return {"summary": summary, "responses": responses}


_CODES = {
    "403": "Refused by policy: a POST when listening off loopback without a token.",
    "404": "No such task, approval or dead letter.",
    "409": "Refused by the orchestrator (its reason; `code` says which rule).",
    "413": "The body is over 1 MiB.",
    "415": "A POST whose Content-Type is not application/json.",
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def _path(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema or STR,
        "description": description,
    }


def _with(op: dict[str, Any], *params: dict[str, Any], body: str | None = None) -> dict[str, Any]:
    op["parameters"] = list(params)
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(body)}},
        }
    return op


_TASK = _path("task_id", "The task's id.")
_SEQ = _path("seq", "The dead letter's DLQ stream sequence.", INT)
_AFTER = _query("after", INT, "Only events after this EVENTS sequence (0: from the first).")
_POST = ("403", "404", "409", "413", "415")


def openapi() -> dict[str, Any]:
    """The whole document."""
    sse = {"description": "Server-Sent Events", "content": {"text/event-stream": {}}}
    stream = _with(
        _op("A task's events live (SSE; `Last-Event-ID` honoured)", None, codes=("404",)),
        _TASK,
        _AFTER,
    )
    stream["responses"]["200"] = sse
    paths = {
        "/": {"get": _op("The dashboard page (HTML)", None)},
        "/healthz": {"get": _op("200 once connected to the bus", obj(["ok"], ok=ANY_VALUE))},
        "/api/openapi.json": {"get": _op("This document", OBJ)},
        "/api/config": {
            "get": _op(
                "Trace link template and whether a token is required / decisions allowed",
                obj(
                    ["trace_url", "token_required", "decisions_allowed"],
                    trace_url=NSTR,
                    token_required={"type": "boolean"},
                    decisions_allowed={"type": "boolean"},
                ),
            )
        },
        "/api/tasks": {
            "get": _with(
                _op("Tasks, newest first, paged", ref("TaskPage")),
                _query(
                    "status",
                    {"type": "string", "enum": list(STATUS_FILTERS)},
                    "Only tasks in this status (`running`: every task not ended).",
                ),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "Rows."),
                _query("cursor", STR, "The `next` of the previous page."),
            )
        },
        "/api/tasks/{task_id}": {
            "get": _with(_op("One task, with its DAG", ref("TaskDetail"), codes=("404",)), _TASK)
        },
        "/api/tasks/{task_id}/events": {
            "get": _with(
                _op("A task's events, oldest first", ref("Events"), codes=("404",)),
                _TASK,
                _AFTER,
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 5000}, "Events."),
            )
        },
        "/api/tasks/{task_id}/stream": {"get": stream},
        "/api/approvals": {
            "get": _with(
                _op(
                    "Pending approvals",
                    obj(["approvals"], approvals={"type": "array", "items": ref("Approval")}),
                ),
                _query("task_id", STR, "Only this task's."),
            )
        },
        "/api/approvals/{approval_id}": {
            "post": _with(
                _op(
                    "Decide: approve, reject, modify or respond",
                    ref("DecisionResult"),
                    codes=_POST,
                ),
                _path("approval_id", "The approval's id (`ap-...`)."),
                body="DecisionBody",
            )
        },
        "/api/dlq": {
            "get": _op(
                "Dead letters, oldest first",
                obj(["entries"], entries={"type": "array", "items": ref("DeadLetterRow")}),
            )
        },
        "/api/dlq/{seq}": {
            "get": _with(_op("One dead letter whole", ref("DeadLetter"), codes=("404",)), _SEQ)
        },
        "/api/dlq/{seq}/replay": {
            "post": _with(
                _op("Submit it again as a new task", obj(["task_id"], task_id=STR), codes=_POST),
                _SEQ,
                body="ReplayBody",
            )
        },
        "/api/stats": {
            "get": _with(
                _op("The `hivebus stats --json` scorecard", OBJ),
                _query("since", STR, "Window: 30m, 24h, 7d (default 24h)."),
                _query("by", {"type": "string", "enum": ["role", "kind", "model"]}, "Rows by."),
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "hivebus dashboard API",
            "version": "1",
            "description": "What the dashboard page reads and does; every answer is JSON, "
            'every error `{"error": ...}`. With HIVEBUS_DASHBOARD_TOKEN set, send '
            "`Authorization: Bearer <token>` (or `?token=`).",
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
        "paths": paths,
    }
