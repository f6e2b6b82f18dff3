"""How a task ended, computed once from its sub-tasks: status, output, usage, summaries."""

from __future__ import annotations

from hivebus.contracts import (
    SubTaskState,
    SubTaskStatus,
    SubTaskSummary,
    TaskFinished,
    TaskMeta,
    TaskStatus,
    TaskSubmitted,
    Usage,
)
from hivebus.contracts.knowledge import NoteWrite, task_folder
from hivebus.core import Clock
from hivebus.orchestrator.graph import Graph

S = SubTaskStatus


def summarize(
    task_id: str, graph: Graph, states: list[SubTaskState], meta: TaskMeta, clock: Clock
) -> TaskFinished:
    """The task's outcome from its sub-tasks: status, output, usage and a summary of each.

    Sub-tasks a revision superseded count for usage and are summarized, but the status,
    the reason and the output come from the rest.
    """
    usage = Usage()
    for state in states:
        usage = usage.plus(state.usage)
    summaries = [
        SubTaskSummary(
            id=s.id,
            role=s.role,
            status=s.status,
            reason=s.reason,
            blocked_by=s.blocked_by,
            usage=s.usage,
            output=s.output,
            flags=s.flags,
            approvals=s.approvals,
        )
        for s in sorted(states, key=lambda s: graph.index[s.id])
    ]
    superseded = set(meta.planning.superseded)
    states = [s for s in states if s.id not in superseded]
    by_id = {state.id: state for state in states}
    completed = [s for s in states if s.status == S.COMPLETED]
    usage.wall_s = round((clock.now() - meta.submitted_at).total_seconds(), 3)
    # The output: completed sub-tasks none of whose dependents completed (the sinks, if all ran).
    frontier = {
        s.id: s.output
        for s in completed
        if not any(by_id.get(d) and by_id[d].status == S.COMPLETED for d in graph.dependents[s.id])
    }
    if meta.ending is not None:
        status, degraded = meta.ending, True
        if meta.ending == TaskStatus.TIMEOUT and not completed:
            frontier = {}
        reason = f"{meta.reason}; {len(completed)} of {len(states)} sub-tasks completed"
    elif len(completed) == len(states):
        status, degraded = TaskStatus.COMPLETED, False
        reason = f"all {len(states)} sub-tasks completed"
    else:
        failed = [s for s in states if s.status not in {S.COMPLETED, S.BLOCKED}]
        if completed:
            status = TaskStatus.PARTIAL
        elif failed and all(s.status == S.BUDGET_EXCEEDED for s in failed):
            status = TaskStatus.BUDGET_EXCEEDED
        else:
            status = TaskStatus.FAILED
        degraded = True
        blocked = [s for s in states if s.status == S.BLOCKED]
        causes = "; ".join(f"{s.id} {s.status.value}: {s.reason}" for s in failed)
        reason = f"{len(completed)} of {len(states)} sub-tasks completed; {causes}"
        if blocked:
            reason += f"; {len(blocked)} blocked"
    if superseded:
        reason += f"; {len(superseded)} replaced by {meta.planning.revisions} revised plan(s)"
    return TaskFinished(
        task_id=task_id,
        status=status,
        reason=reason,
        degraded=degraded,
        output=frontier or None,
        usage=usage,
        subtasks=summaries,
    )


NOTE_VALUE_CHARS = 80
"""How much of a changed argument's value the summary note shows."""


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= NOTE_VALUE_CHARS else text[: NOTE_VALUE_CHARS - 3] + "..."


def _approval_lines(result: TaskFinished) -> list[str]:
    """The approvals of every sub-task, one row each: who decided what, when, and why."""
    rows = [(sub.id, a) for sub in result.subtasks for a in sub.approvals]
    if not rows:
        return []
    lines = [
        "",
        "## Approvals",
        "",
        "| sub-task | asked | decision | by | at | reason |",
        "|---|---|---|---|---|---|",
    ]
    for sid, a in rows:
        decision = a.decision.value + (" (timed out)" if a.timed_out else "")
        if a.arguments_diff:
            changed = ", ".join(
                f"{name}: {_short(change['from'])} -> {_short(change['to'])}"
                for name, change in a.arguments_diff.items()
            )
            decision += f"; changed {changed}"
        asked = f"{a.approval_kind.value} {a.tool}"
        lines.append(
            f"| {sid} | {_cell(asked)} | {_cell(decision)} | {_cell(a.by)} "
            f"| {a.at.isoformat()} | {_cell(a.reason)} |"
        )
    return lines


def summary_note(submission: TaskSubmitted, result: TaskFinished) -> NoteWrite:
    """The task's summary as a note in its folder: status, outputs, usage, blocked reasons."""
    u = result.usage
    lines = [
        f"# {submission.goal}",
        "",
        f"**Status:** {result.status.value}{' (degraded)' if result.degraded else ''}  ",
        f"**Why:** {result.reason}  ",
        (
            f"**Usage:** {u.input_tokens} in / {u.output_tokens} out tokens, "
            f"${u.cost_usd:.4f}, {u.steps} steps, {u.tool_calls} tool calls, "
            f"{u.retries} retries, {u.wall_s:.1f}s"
        ),
        "",
        "| sub-task | role | status | reason |",
        "|---|---|---|---|",
    ]
    for sub in result.subtasks:
        why = f"blocked by {sub.blocked_by}" if sub.blocked_by else sub.reason
        lines.append(f"| {sub.id} | {sub.role} | {sub.status.value} | {why.replace('|', '/')} |")
    lines += _approval_lines(result)
    if result.result_ref is not None:
        # Too large for one message: the event lists only what did not complete, and its
        # output is a preview; the whole event is in the artifacts store.
        lines += ["", f"The whole result is in the `artifacts` store as `{result.result_ref}`;"]
        lines += ["the table lists only the sub-tasks that did not complete."]
    if isinstance(result.output, dict):
        lines += ["", "## Output", ""]
        for key, value in result.output.items():
            lines += [f"### {key}", "", str(value), ""]
    elif result.output:
        lines += ["", "## Output (preview)", "", str(result.output)]
    return NoteWrite(
        write_id=f"{result.task_id}-summary",
        task_id=result.task_id,
        role="orchestrator",
        path=f"{task_folder(result.task_id)}/summary.md",
        title=f"Summary of {result.task_id}",
        tags=["summary", result.status.value],
        body="\n".join(lines)[:200_000],
    )
