"""The JSON Schemas of the API's bodies and answers, for `openapi` (data only)."""

from __future__ import annotations

from typing import Any

from hivebus.console.dashboard.index import STATUS_FILTERS
from hivebus.console.dashboard.routes_ops import DecisionBody, ReplayBody
from hivebus.contracts import DeadLetter, PlanningInfo, TaskBudget, Usage

OBJ: dict[str, Any] = {"type": "object"}
ANY_VALUE: dict[str, Any] = {}


def ref(name: str) -> dict[str, Any]:
    """A reference to one of `SCHEMAS`."""
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: list[str], **props: Any) -> dict[str, Any]:
    """An object schema with these required names and properties."""
    return {"type": "object", "required": required, "properties": props}


STR = {"type": "string"}
NSTR = {"type": ["string", "null"]}
INT = {"type": "integer"}
NUM = {"type": "number"}
TIME = {"type": "string", "format": "date-time"}
NTIME = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "Error": obj(["error"], error=STR),
    "Usage": Usage.model_json_schema(),
    "TaskBudget": TaskBudget.model_json_schema(),
    "PlanningInfo": PlanningInfo.model_json_schema(),
    "TaskRow": obj(
        ["task_id", "goal", "status", "counts", "subtasks", "submitted_at"],
        task_id=STR,
        goal=STR,
        status={"type": "string", "enum": list(STATUS_FILTERS)},
        reason=STR,
        counts={"type": "object", "additionalProperties": INT},
        subtasks=INT,
        tokens=INT,
        cost_usd=NUM,
        duration_s={"type": ["number", "null"]},
        submitted_at=NTIME,
        finished_at=NTIME,
    ),
    "TaskPage": obj(
        ["tasks", "next", "total"],
        tasks={"type": "array", "items": ref("TaskRow")},
        next=NSTR,
        total=INT,
    ),
    "SubTask": obj(
        ["id", "role", "status"],
        id=STR,
        role=STR,
        kind=NSTR,
        status=STR,
        reason=STR,
        blocked_by=NSTR,
        depends_on={"type": "array", "items": STR},
        attempt=INT,
        usage=ref("Usage"),
        output=ANY_VALUE,
        flags={"type": "array", "items": STR},
        approvals={"type": "array", "items": OBJ},
    ),
    "Graph": obj(
        ["width", "height", "nodes", "edges"],
        width=NUM,
        height=NUM,
        nodes={
            "type": "array",
            "items": obj(["id", "x", "y", "w", "h"], id=STR, x=NUM, y=NUM, w=NUM, h=NUM),
        },
        edges={
            "type": "array",
            "items": obj(
                ["from", "to", "points"],
                to=STR,
                points={"type": "array", "items": {"type": "array", "items": NUM}},
                **{"from": STR},
            ),
        },
    ),
    "TaskDetail": obj(
        ["task_id", "goal", "status", "subtasks", "graph"],
        task_id=STR,
        goal=STR,
        status=STR,
        reason=STR,
        errors={"type": "array", "items": STR},
        degraded={"type": "boolean"},
        budget=ref("TaskBudget"),
        usage=ref("Usage"),
        submitted_at=NTIME,
        finished_at=NTIME,
        duration_s={"type": ["number", "null"]},
        output=ANY_VALUE,
        trace_id=NSTR,
        trace_url=NSTR,
        planning=ref("PlanningInfo"),
        subtasks={"type": "array", "items": ref("SubTask")},
        graph=ref("Graph"),
    ),
    "EventRow": obj(["seq", "kind", "time", "event"], seq=INT, kind=STR, time=TIME, event=OBJ),
    "Events": obj(["events", "last"], events={"type": "array", "items": ref("EventRow")}, last=INT),
    "Approval": obj(
        ["approval_id", "task_id", "subtask_id", "tool", "kind", "allowed_decisions"],
        approval_id=STR,
        task_id=STR,
        subtask_id=STR,
        run_id=STR,
        role=STR,
        attempt=INT,
        step=INT,
        call_id=STR,
        tool=STR,
        tier=NSTR,
        arguments=OBJ,
        reason=STR,
        kind={"type": "string", "enum": ["tool_call", "spend", "question"]},
        question=NSTR,
        schema={"type": ["object", "null"]},
        estimated_cost_usd={"type": ["number", "null"]},
        allowed_decisions={"type": "array", "items": STR},
        expires_at=TIME,
        requested_at=TIME,
        pause={"type": "array", "items": STR},
    ),
    "DecisionBody": DecisionBody.model_json_schema(),
    "DecisionResult": obj(["status", "message"], status=STR, message=STR, decision=STR),
    "ReplayBody": ReplayBody.model_json_schema(),
    "DeadLetterRow": obj(
        ["seq", "why", "task_id"],
        seq=INT,
        why=STR,
        task_id=STR,
        subtask_id=NSTR,
        attempt=INT,
        deliveries=INT,
        errors={"type": "array", "items": STR},
        time=TIME,
    ),
    "DeadLetter": {**DeadLetter.model_json_schema(), "description": "The letter, and its `seq`."},
}
