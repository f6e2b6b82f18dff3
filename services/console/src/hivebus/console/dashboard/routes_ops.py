"""Routes for what a person does: approvals, dead letters (list, show, replay), stats.

A decision goes the CLI's way (`HiveClient.decide`): `ApprovalDecided` on CONTROL, then the
orchestrator's `ApprovalResolved` or `ApprovalRefused` is awaited. `modify` arguments are
checked against the tool's schema first, by the orchestrator's own rule, so a bad edit is a
400 naming the field rather than a refusal later.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hivebus.console.client import ReplayError
from hivebus.console.dashboard.errors import ApiError
from hivebus.console.dashboard.index import iso
from hivebus.console.dashboard.routes_tasks import dashboard_of, task_id_of
from hivebus.console.dashboard.security import MAX_BODY
from hivebus.console.deciding import OutcomeStatus
from hivebus.console.stats import By, Window, parse_duration, scorecard, scorecard_json
from hivebus.console.stats_reader import LOOKBACK, StatsReadError, collect
from hivebus.contracts import (
    ApprovalRequested,
    Decision,
    describe_validation_error,
    is_identifier,
)
from hivebus.orchestrator.approvals import arguments_problem

DLQ_LIMIT = 1000


class DecisionBody(BaseModel):
    """The body of `POST /api/approvals/{approval_id}`."""

    model_config = ConfigDict(extra="forbid")

    task_id: str | None = Field(default=None, description="The approval's task (found if unset).")
    decision: Decision
    reason: str = Field(default="", max_length=10_000, description="Required to reject.")
    arguments: dict[str, Any] | None = Field(default=None, description="`modify`: new arguments.")
    answer: str | None = Field(default=None, max_length=100_000, description="`respond`.")
    by: str = Field(default="dashboard", min_length=1, max_length=200, description="Who decides.")


class ReplayBody(BaseModel):
    """The body of `POST /api/dlq/{seq}/replay`."""

    model_config = ConfigDict(extra="forbid")

    from_checkpoint: bool = Field(default=True, description="Resume from the last checkpoint.")


async def read_body(request: Request, model: type[BaseModel], what: str) -> Any:
    """The JSON body as `model`, or 400 naming each problem (413 past `MAX_BODY`)."""
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise ApiError(413, f"the body is over {MAX_BODY} bytes")
    try:
        value = json.loads(data or b"{}")
    except ValueError as exc:
        raise ApiError(400, f"the body is not JSON: {exc}") from exc
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise ApiError(400, "; ".join(describe_validation_error(exc, what))) from exc


def approval_row(request: ApprovalRequested) -> dict[str, Any]:
    """One pending approval as the page shows it."""
    return {
        "approval_id": request.approval_id,
        "task_id": request.task_id,
        "subtask_id": request.subtask_id,
        "run_id": request.run_id,
        "role": request.role,
        "attempt": request.attempt,
        "step": request.step,
        "call_id": request.call_id,
        "tool": request.tool,
        "tier": request.tier.value if request.tier is not None else None,
        "arguments": request.arguments,
        "reason": request.reason,
        "kind": request.approval_kind.value,
        "question": request.question,
        "schema": request.args_schema,
        "estimated_cost_usd": request.estimated_cost_usd,
        "allowed_decisions": [d.value for d in request.allowed_decisions],
        "expires_at": iso(request.expires_at),
        "requested_at": iso(request.ts),
        "pause": list(request.pause),
    }


async def approvals(request: Request) -> Response:
    """The pending approvals, oldest first: of one task (`task_id=`) or of every task."""
    task_id = task_id_of(request) if request.query_params.get("task_id") else None
    pending = await dashboard_of(request).client.approvals(task_id)
    return JSONResponse({"approvals": [approval_row(r) for r in pending.approvals]})


def _problem(body: DecisionBody, asked: ApprovalRequested) -> str | None:
    if body.decision is Decision.REJECT and not body.reason.strip():
        return "reason: required to reject (the model reads it)"
    if body.decision is Decision.MODIFY:
        if body.arguments is None:
            return "arguments: modify needs the arguments the call runs with instead"
        problem = arguments_problem(asked.args_schema, body.arguments)
        return None if problem is None else f"arguments: {problem}"
    if body.decision is Decision.RESPOND and not (body.answer or "").strip():
        return "answer: respond needs the answer to the question"
    return None


async def decide(request: Request) -> Response:
    """Approve, reject, modify or respond; wait for the orchestrator's answer."""
    approval_id = request.path_params["approval_id"]
    body: DecisionBody = await read_body(request, DecisionBody, "body")
    if body.task_id is not None and not is_identifier(body.task_id):
        raise ApiError(400, f"task_id: {body.task_id!r} is not a task id")
    if not is_identifier(approval_id):
        raise ApiError(400, f"approval_id: {approval_id!r} is not an approval id (ap-...)")
    dashboard = dashboard_of(request)
    client = await dashboard.decider()
    asked = await client.find_approval(approval_id, body.task_id)
    if asked is None:
        raise ApiError(404, f"no approval {approval_id} was asked for (in the last 24h)")
    problem = _problem(body, asked)
    if problem is not None:
        raise ApiError(400, problem)
    outcome = await client.decide(
        approval_id,
        body.decision,
        body.by,
        body.reason,
        arguments=body.arguments if body.decision is Decision.MODIFY else None,
        answer=body.answer if body.decision is Decision.RESPOND else None,
        task_id=asked.task_id,
        wait_s=dashboard.decide_wait_s,
    )
    if outcome.status is OutcomeStatus.REFUSED:
        code = outcome.code.value if outcome.code is not None else None
        raise ApiError(
            409, outcome.why, {"status": "refused", "code": code, "message": outcome.why}
        )
    if outcome.status is OutcomeStatus.UNANSWERED:
        return JSONResponse({"status": "unanswered", "message": outcome.why}, status_code=202)
    return JSONResponse(
        {
            "status": "resolved",
            "decision": body.decision.value,
            "message": f"{body.decision.value} of {approval_id} applied (by {body.by})",
        }
    )


async def dlq(request: Request) -> Response:
    """Every dead letter (oldest first, at most 1000) with what the list shows."""
    letters = await dashboard_of(request).client.dead_letters(DLQ_LIMIT)
    return JSONResponse(
        {
            "entries": [
                {
                    "seq": seq,
                    "why": d.why,
                    "task_id": d.task_id,
                    "subtask_id": d.subtask_id,
                    "attempt": d.attempt,
                    "deliveries": d.deliveries,
                    "errors": d.errors,
                    "time": iso(d.ts),
                }
                for seq, d in letters
            ]
        }
    )


def _seq(request: Request) -> int:
    text = request.path_params["seq"]
    if not text.isdigit() or int(text) < 1:
        raise ApiError(400, f"seq: {text!r} is not a dead letter's number")
    return int(text)


async def dead_letter(request: Request) -> Response:
    """One dead letter whole: original message, checkpoint, usage, error chain."""
    seq = _seq(request)
    letter = await dashboard_of(request).client.dead_letter(seq)
    if letter is None:
        raise ApiError(404, f"no dead letter {seq}")
    return JSONResponse({"seq": seq, **letter.model_dump(mode="json")})


async def replay(request: Request) -> Response:
    """Submit a dead letter again as a new task; answers its id."""
    seq = _seq(request)
    body: ReplayBody = await read_body(request, ReplayBody, "body")
    try:
        task_id = await (await dashboard_of(request).decider()).replay(
            seq, from_checkpoint=body.from_checkpoint
        )
    except ReplayError as exc:
        raise ApiError(404, str(exc)) from exc
    except ValidationError as exc:
        raise ApiError(
            409, f"dead letter {seq} cannot be replayed: its message is no task"
        ) from exc
    return JSONResponse({"task_id": task_id})


async def stats(request: Request) -> Response:
    """The `hivebus stats --json` scorecard of the last `since` (default 24h), `by` role."""
    dashboard_of(request).client  # noqa: B018 - 503 until the bus is reached
    since = request.query_params.get("since") or "24h"
    by_text = request.query_params.get("by") or By.ROLE.value
    try:
        length = parse_duration(since)
    except ValueError as exc:
        raise ApiError(400, f"since: {exc}") from exc
    try:
        by = By(by_text)
    except ValueError:
        raise ApiError(400, f"by: {by_text!r} is not one of role, kind, model") from None
    now = datetime.now(UTC)
    window = Window(now - length, now)
    try:
        board = dashboard_of(request)
        tally = await collect(board.url, window.start - LOOKBACK, board.settings)
    except StatsReadError as exc:
        raise ApiError(503, str(exc)) from exc
    return JSONResponse(scorecard_json(scorecard(tally, by, window)))
