"""How approvals read in a terminal: a request with the commands that answer it, outcomes.

Every line here is Rich markup; whatever came from a model or a person is escaped.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from rich.markup import escape

from hivebus.console.deciding import Outcome, OutcomeStatus
from hivebus.contracts import (
    ApprovalKind,
    ApprovalRefused,
    ApprovalRequested,
    ApprovalResolved,
    ApprovalSummary,
    Decision,
    TaskFinished,
)

DONE_WORDS: dict[Decision, str] = {
    Decision.APPROVE: "approved",
    Decision.REJECT: "rejected",
    Decision.MODIFY: "modified",
    Decision.RESPOND: "answered",
}
"""The past tense of each decision, as the CLI says it."""


def arguments_json(arguments: dict[str, Any]) -> str:
    """Arguments as compact JSON, keys in order (what `--args` takes back)."""
    return json.dumps(arguments, sort_keys=True, ensure_ascii=False, default=str)


def answer_commands(request: ApprovalRequested, prefix: str = "") -> dict[str, str]:
    """The command that sends each decision the request allows, by decision.

    `prefix` goes before `hivebus` (an environment assignment that names the server, say).
    """
    target = f"{prefix}hivebus"
    ap = request.approval_id
    args = shlex.quote(arguments_json(request.arguments))
    commands = {
        Decision.APPROVE: f"{target} approve {ap}",
        Decision.REJECT: f"{target} reject {ap} --reason 'why not'",
        Decision.MODIFY: f"{target} modify {ap} --args {args}",
        Decision.RESPOND: f"{target} answer {ap} 'your answer'",
    }
    return {d.value: commands[d] for d in request.allowed_decisions}


def request_json(request: ApprovalRequested) -> dict[str, Any]:
    """One pending approval for `approvals --json`: the request's fields and `commands`."""
    return {**request.model_dump(mode="json"), "commands": answer_commands(request)}


def _what(request: ApprovalRequested) -> str:
    if request.approval_kind is ApprovalKind.QUESTION:
        return f"question: {escape(request.question or '')}"
    if request.approval_kind is ApprovalKind.PLAN:
        count = len(request.arguments.get("subtasks") or [])
        return f"a plan of {count} sub-task{'s' * (count != 1)} ({escape(request.call_id)})"
    if request.approval_kind is ApprovalKind.SPEND:
        cost = request.estimated_cost_usd
        return f"model call {escape(request.tool)}" + (f" (~${cost:.4f})" if cost else "")
    tier = f" ({request.tier.value})" if request.tier is not None else ""
    return f"tool {escape(request.tool)}{tier}"


def request_lines(request: ApprovalRequested, prefix: str = "") -> str:
    """A request as a block: what, where, why, until when, and the commands that answer it."""
    lines = [
        (
            f"[magenta]? approval {request.approval_id}[/] {request.subtask_id} "
            f"({request.role}) asks: {_what(request)}"
        ),
    ]
    if request.approval_kind is not ApprovalKind.QUESTION:
        lines.append(f"      arguments: {escape(arguments_json(request.arguments))}")
    if request.reason:
        lines.append(f"      reason: {escape(request.reason)}")
    lines.append(f"      expires at {request.expires_at.isoformat(timespec='seconds')}")
    lines.append("      answer with:")
    lines.extend(f"        {escape(c)}" for c in answer_commands(request, prefix).values())
    return "\n".join(lines)


def resolved_line(event: ApprovalResolved) -> str:
    """A resolution: which approval, what was decided, by whom, why."""
    what = "timed out: rejected" if event.timed_out else DONE_WORDS[event.decision]
    why = f": {escape(event.reason)}" if event.reason else ""
    args = (
        f"\n      arguments now: {escape(arguments_json(event.arguments))}"
        if event.arguments is not None
        else ""
    )
    return (
        f"[magenta]✓ approval {event.approval_id}[/] {event.subtask_id} {what} "
        f"by {escape(event.by)}{why}{args}"
    )


def refused_line(event: ApprovalRefused) -> str:
    """A refusal: which approval, the code, what is wrong."""
    by = f" from {escape(event.by)}" if event.by else ""
    decision = f" {event.decision.value}" if event.decision is not None else ""
    return (
        f"[yellow]✗ approval {event.approval_id}[/]{decision}{by} refused "
        f"({event.code.value}): {escape(event.why)}"
    )


def outcome_line(outcome: Outcome) -> str:
    """What the decision commands say about their outcome (plain text)."""
    decided = outcome.decided
    if outcome.status is OutcomeStatus.APPLIED and decided is not None:
        return (
            f"{DONE_WORDS[decided.decision]} {outcome.approval_id} (task {decided.task_id}) "
            f"by {decided.by}; the run resumes"
        )
    if outcome.status is OutcomeStatus.REFUSED:
        code = outcome.code.value if outcome.code is not None else "refused"
        return f"refused ({code}): {outcome.why}"
    if outcome.status is OutcomeStatus.SENT and decided is not None:
        return f"sent {decided.decision.value} for {outcome.approval_id} (task {decided.task_id})"
    return f"no answer for {outcome.approval_id}: {outcome.why}"


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    """An outcome for `--json`: status, code, why, and the events that tell it."""
    decided = outcome.decided
    return {
        "approval_id": outcome.approval_id,
        "status": outcome.status.value,
        "code": outcome.code.value if outcome.code is not None else None,
        "why": outcome.why,
        "task_id": decided.task_id if decided is not None else None,
        "decision": decided.decision.value if decided is not None else None,
        "by": decided.by if decided is not None else None,
        "decision_event_id": decided.event_id if decided is not None else None,
        "resolution": outcome.resolved.model_dump(mode="json") if outcome.resolved else None,
        "refusal": outcome.refused.model_dump(mode="json") if outcome.refused else None,
    }


def _summary(sub_id: str, approval: ApprovalSummary) -> str:
    what = "timed out: rejected" if approval.timed_out else DONE_WORDS[approval.decision]
    why = f": {escape(approval.reason)}" if approval.reason else ""
    diff = (
        f"\n      changed: {escape(arguments_json(approval.arguments_diff))}"
        if approval.arguments_diff
        else ""
    )
    return (
        f"  {sub_id} {approval.approval_id} {escape(approval.tool)} {what} by "
        f"{escape(approval.by)} at {approval.at.isoformat(timespec='seconds')}{why}{diff}"
    )


def summary_lines(result: TaskFinished) -> list[str]:
    """The approvals of a finished task, one line per approval (none: an empty list)."""
    lines = [_summary(sub.id, a) for sub in result.subtasks for a in sub.approvals]
    return ["approvals:", *lines] if lines else []
