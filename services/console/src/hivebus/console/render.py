"""What the CLI shows: progress while a task runs, a summary table and an exit code at its end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from hivebus.console.approval_view import (
    refused_line,
    request_lines,
    resolved_line,
    summary_lines,
)
from hivebus.console.client import HiveClient
from hivebus.contracts import (
    ApprovalRefused,
    ApprovalRequested,
    ApprovalResolved,
    BreakerChanged,
    BudgetWarning,
    NoteCommitted,
    PlanReady,
    PlanRejected,
    StepRecorded,
    SubTaskFinished,
    SubTaskStarted,
    SubTaskStatus,
    TaskFinished,
    TaskRejected,
    TaskStatus,
)

EXIT_CODES: dict[TaskStatus, int] = {
    TaskStatus.COMPLETED: 0,
    TaskStatus.PARTIAL: 3,
    TaskStatus.FAILED: 4,
    TaskStatus.TIMEOUT: 5,
    TaskStatus.BUDGET_EXCEEDED: 6,
    TaskStatus.CANCELLED: 7,
}
"""Exit codes of `run`, `demo` and `submit --wait`: 0 only for `completed`.
1 is an unexpected error, 2 a usage error (bad option, unreadable file)."""

EXIT_ERROR = 1
"""Exit code of an unexpected error."""

EXIT_REJECTED = 8
"""Exit code when the submission was refused (`TaskRejected`)."""

EXIT_REFUSED = 9
"""Exit code of `approve`, `reject`, `modify` and `answer` when the decision was refused."""

EXIT_UNANSWERED = 10
"""Exit code of a decision sent without an answer in time (it may still apply)."""

_MARKS = {SubTaskStatus.COMPLETED: "[green]✔[/]", SubTaskStatus.BLOCKED: "[yellow]⊘[/]"}


def short_route(route: str) -> str:
    """A model route (or a chain `a > b`) for display: `scripted:` routes by file name only."""

    def one(part: str) -> str:
        provider, _, name = part.partition(":")
        return f"{provider}:{name.rsplit('/', 1)[-1]}" if provider == "scripted" else part

    return " > ".join(one(part) for part in route.split(" > "))


def _started(event: SubTaskStarted) -> str:
    return f"[cyan]▶[/] {event.subtask_id} started ({event.role}, {short_route(event.model)})"


def _step(event: StepRecorded) -> str:
    flag = "[red]error[/]" if event.error else "ok"
    extra = "".join(f"\n      · {note}" for note in event.notes)
    extra += "".join(
        f"\n      · retry {r.attempt} after {r.delay_s:g}s: {r.error}" for r in event.retries
    )
    name = short_route(event.name)
    return f"    {event.subtask_id} step {event.step}: {event.step_kind} {name} {flag}{extra}"


def _finished(event: SubTaskFinished) -> str:
    mark = _MARKS.get(event.status, "[red]✘[/]")
    flags = "".join(f"\n      ! {flag}" for flag in event.flags)
    return f"{mark} {event.subtask_id} {event.status.value}: {event.reason}{flags}"


def _budget(event: BudgetWarning) -> str:
    return (
        f"[yellow]budget warning[/]: {event.used_tokens} of {event.max_tokens} tokens, "
        f"${event.used_cost_usd:.4f} of ${event.max_cost_usd:.2f}"
    )


def _breaker(event: BreakerChanged) -> str:
    return f"[yellow]breaker[/] {event.breaker}: {event.old} -> {event.new}"


def _rejected(event: TaskRejected) -> str:
    return "[red]task rejected:[/]\n" + "\n".join(f"  - {e}" for e in event.errors)


def _task(event: TaskFinished) -> str:
    return f"[bold]task {event.task_id} {event.status.value}[/]: {event.reason}"


def _plan(event: PlanReady) -> str:
    """The plan a planner made: one line per sub-task, with what it waits for."""
    fixed = f" after {event.corrections} correction{'s' * (event.corrections != 1)}"
    lines = [
        f"[bold]plan {event.generation} ready[/] ({len(event.plan.subtasks)} sub-tasks"
        + (fixed if event.corrections else "")
        + (f", approved by {event.reviewed_by}" if event.reviewed_by else "")
        + ")"
    ]
    if event.generation > 1:
        kept = ", ".join(event.kept) or "nothing"
        lines[0] = lines[0].replace("ready[/]", "ready[/] (a revision)", 1)
        lines.append(f"  replaces {', '.join(event.replaced)}; keeps {kept}")
    for spec in event.plan.subtasks:
        after = f" after {', '.join(spec.depends_on)}" if spec.depends_on else ""
        lines.append(f"  - {spec.id} ({spec.role}){after}: {spec.prompt}")
    return "\n".join(lines)


def _plan_rejected(event: PlanRejected) -> str:
    then = "sent back to the planner" if event.retrying else "no more corrections"
    errors = "".join(f"\n      - {error}" for error in event.errors)
    return f"[yellow]plan rejected[/] (answer {event.attempt}, {then}):{errors}"


def _note(event: NoteCommitted) -> str:
    return f"[blue]✎[/] {event.path} committed by {event.author} ({event.commit[:8]})"


_LINES: dict[type[BaseModel], Callable[[Any], str]] = {
    PlanReady: _plan,
    PlanRejected: _plan_rejected,
    NoteCommitted: _note,
    SubTaskStarted: _started,
    StepRecorded: _step,
    SubTaskFinished: _finished,
    BudgetWarning: _budget,
    BreakerChanged: _breaker,
    TaskRejected: _rejected,
    TaskFinished: _task,
    ApprovalRequested: request_lines,
    ApprovalResolved: resolved_line,
    ApprovalRefused: refused_line,
}


def progress_line(event: BaseModel) -> str | None:
    """One line of live progress for an event, or None for events not worth a line."""
    render = _LINES.get(type(event))
    return render(event) if render else None


def summary_table(result: TaskFinished) -> Table:
    """Per-sub-task status, reason, usage."""
    planned = result.planning.source == "planned"
    how = f", planned ({result.planning.corrections} corrections)" if planned else ""
    if result.planning.revisions:
        how += f", {result.planning.revisions} revised plan(s)"
    table = Table(title=f"task {result.task_id}: {result.status.value}{how}")
    for column in ("sub-task", "role", "status", "reason", "tokens", "steps", "tools", "wall s"):
        table.add_column(column)
    for sub in result.subtasks:
        table.add_row(
            sub.id,
            sub.role,
            sub.status.value,
            sub.reason if not sub.blocked_by else f"blocked by {sub.blocked_by}",
            str(sub.usage.tokens),
            str(sub.usage.steps),
            str(sub.usage.tool_calls),
            f"{sub.usage.wall_s:.2f}",
        )
    u = result.usage
    table.caption = (
        f"{u.input_tokens} in / {u.output_tokens} out tokens, ${u.cost_usd:.4f}, "
        f"{u.steps} steps, {u.tool_calls} tool calls, {u.wall_s:.2f}s"
    )
    return table


def stderr_console() -> Console:
    """Progress goes to stderr so stdout stays for results."""
    return Console(stderr=True, highlight=False)


async def follow_to_end(
    client: HiveClient,
    task_id: str,
    console: Console,
    timeout_s: float | None,
    *,
    nats_url: str | None = None,
    on_event: Callable[[BaseModel], Awaitable[None]] | None = None,
) -> TaskFinished | TaskRejected:
    """Print progress lines until the task finishes or is rejected; return that event.

    An approval request is printed with the commands that answer it, prefixed with
    `HIVEBUS_NATS_URL=<nats_url>` when given (a server this process started). `on_event`
    sees every event after its line is printed (the demo answers approvals there).
    """
    prefix = f"HIVEBUS_NATS_URL={nats_url} " if nats_url else ""
    async with asyncio.timeout(timeout_s):
        async for _kind, event in client.follow(task_id):
            if isinstance(event, ApprovalRequested):
                # Not wrapped: the commands in it must stay whole, to be copied.
                console.print(request_lines(event, prefix), soft_wrap=True)
            elif line := progress_line(event):
                console.print(line)
            if on_event is not None:
                await on_event(event)
            if isinstance(event, TaskFinished | TaskRejected):
                return event
    raise TimeoutError(task_id)


def report(result: TaskFinished | TaskRejected, *, json_out: bool) -> int:
    """Print the final event (JSON or a table) and return the exit code."""
    if json_out:
        typer.echo(result.model_dump_json())
    elif isinstance(result, TaskFinished):
        Console().print(summary_table(result))
        for line in summary_lines(result):
            Console(highlight=False).print(line)
        if result.output is not None:
            Console().print_json(json.dumps(result.output, default=str))
    if isinstance(result, TaskRejected):
        return EXIT_REJECTED
    return EXIT_CODES.get(result.status, EXIT_ERROR)
