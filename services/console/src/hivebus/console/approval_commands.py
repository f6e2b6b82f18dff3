"""The commands that list and answer approvals: approvals, approve, reject, modify, answer.

A decision names the approval by id alone (its task is found among the recent requests, or
named with `--task`), is sent as `ApprovalDecided` on CONTROL, and the command waits for what
became of it. Exit code: 0 applied, 9 refused (the code and why are printed), 10 no answer in
time (the decision may still apply), 2 a usage error (nothing was sent), 1 unexpected.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from hivebus.console.approval_view import outcome_json, outcome_line, request_json, request_lines
from hivebus.console.client import HiveClient
from hivebus.console.deciding import Outcome, OutcomeStatus
from hivebus.console.options import EXIT_USAGE, settings_from_env, url_or_exit
from hivebus.console.pending import DEFAULT_SINCE_S
from hivebus.console.render import EXIT_ERROR, EXIT_REFUSED, EXIT_UNANSWERED, stderr_console
from hivebus.contracts import (
    ApprovalRequested,
    Decision,
    describe_validation_error,
    is_identifier,
)

ANSWER_MARGIN_S = 15.0
"""Waited beyond the orchestrator's `approval_early_wait_s` (how long it keeps a decision for
an approval not asked for yet) before a decision is reported unanswered."""

REACH_S = 20.0
"""Allowed beyond the wait for the outcome to reach the server and find the approval; the
server is retried until then (a decision command never hangs on a server that is gone)."""

LIST_TIMEOUT_S = 60.0
"""Bound on `approvals` as a whole, the server included."""

ApprovalId = Annotated[str, typer.Argument(help="The approval's id (`ap-...`).")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why; recorded with the decision.")]
ApproverOption = Annotated[
    str | None,
    typer.Option(
        "--as",
        envvar="HIVEBUS_APPROVER",
        help="Who decides (default: $HIVEBUS_APPROVER, else the OS user name).",
        show_default=False,
    ),
]
TaskOption = Annotated[
    str | None,
    typer.Option(
        "--task", help="The approval's task (found from the id when unset).", show_default=False
    ),
]
SinceOption = Annotated[
    float,
    typer.Option("--since", min=0.001, help="Hours back to look for approvals of every task."),
]
WaitOption = Annotated[
    float | None,
    typer.Option(
        "--wait",
        min=0.1,
        help="Seconds to wait for the outcome (default: the orchestrator's wait for an "
        "unknown approval, plus 15).",
        show_default=False,
    ),
]
JsonOutcomeOption = Annotated[
    bool, typer.Option("--json", help="Print the outcome as one JSON object on stdout.")
]


def approver_or_exit(name: str | None) -> str:
    """Who decides: `--as`/$HIVEBUS_APPROVER, else the OS user; exit 2 when neither is known."""
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError) as exc:
        stderr_console().print("[red]who decides?[/] give --as NAME or set HIVEBUS_APPROVER")
        raise typer.Exit(EXIT_USAGE) from exc


def task_or_exit(task: str | None) -> None:
    """Exit 2 unless `--task` (when given) is a task id (it becomes part of subjects and keys)."""
    if task is not None and not is_identifier(task):
        stderr_console().print(f"[red]--task {escape(task)!r} is not a task id[/]")
        raise typer.Exit(EXIT_USAGE)


def arguments_or_exit(text: str) -> dict[str, Any]:
    """`--args` as a JSON object, or exit 2 saying what is wrong (before anything is sent)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        stderr_console().print(
            f"[red]--args is not JSON:[/] {escape(exc.msg)} at line {exc.lineno} column "
            f"{exc.colno}; give the call's arguments as an object, e.g. "
            '\'{"subject": "Hello"}\''
        )
        raise typer.Exit(EXIT_USAGE) from exc
    if not isinstance(value, dict):
        stderr_console().print(
            f"[red]--args must be a JSON object[/] (the call's arguments by name), "
            f"not {type(value).__name__}"
        )
        raise typer.Exit(EXIT_USAGE)
    return value


def exit_code(outcome: Outcome) -> int:
    """0 applied (or sent), 9 refused, 10 no answer in time."""
    if outcome.status is OutcomeStatus.REFUSED:
        return EXIT_REFUSED
    if outcome.status is OutcomeStatus.UNANSWERED:
        return EXIT_UNANSWERED
    return 0


def _decide(
    approval_id: str,
    decision: Decision,
    *,
    by: str | None,
    reason: str = "",
    arguments: dict[str, Any] | None = None,
    answer: str | None = None,
    task: str | None,
    wait: float | None,
    json_out: bool,
) -> None:
    """Send one decision, print its outcome, exit with its code."""
    task_or_exit(task)
    settings = settings_from_env()
    url = url_or_exit(settings)
    who = approver_or_exit(by)
    wait_s = wait if wait is not None else settings.approval_early_wait_s + ANSWER_MARGIN_S

    async def main() -> Outcome:
        try:
            async with asyncio.timeout(wait_s + REACH_S), HiveClient(url, settings) as client:
                return await client.decide(
                    approval_id,
                    decision,
                    who,
                    reason,
                    arguments=arguments,
                    answer=answer,
                    task_id=task,
                    wait_s=wait_s,
                )
        except TimeoutError:
            return Outcome(
                OutcomeStatus.UNANSWERED,
                approval_id,
                why=f"nothing from {url} within {wait_s + REACH_S:g}s: is hivebus running "
                "there? (the decision may or may not have been sent)",
            )

    try:
        outcome = asyncio.run(main())
    except ValidationError as exc:
        problems = "; ".join(describe_validation_error(exc, "decision"))
        stderr_console().print(f"[red]invalid decision:[/] {escape(problems)}")
        raise typer.Exit(EXIT_USAGE) from exc
    if json_out:
        typer.echo(json.dumps(outcome_json(outcome)))
    elif outcome.status in {OutcomeStatus.APPLIED, OutcomeStatus.SENT}:
        typer.echo(outcome_line(outcome))
    else:
        stderr_console().print(escape(outcome_line(outcome)))
    raise typer.Exit(exit_code(outcome))


def approvals(
    task: Annotated[
        str | None, typer.Option("--task", help="Only this task's approvals.", show_default=False)
    ] = None,
    since: SinceOption = DEFAULT_SINCE_S / 3600,
    json_out: Annotated[  # noqa: FBT002 - typer declares flags as boolean parameters
        bool, typer.Option("--json", help="Print the pending approvals as one JSON list.")
    ] = False,
) -> None:
    """List the pending approvals, oldest first, each with the commands that answer it."""
    task_or_exit(task)
    settings = settings_from_env()
    url = url_or_exit(settings)

    async def main() -> tuple[list[ApprovalRequested], bool]:
        async with asyncio.timeout(LIST_TIMEOUT_S), HiveClient(url, settings) as client:
            found = await client.approvals(task, since_s=since * 3600)
        return list(found.approvals), found.truncated

    try:
        pending, truncated = asyncio.run(main())
    except TimeoutError as exc:
        stderr_console().print(
            f"[red]no answer from {url} within {LIST_TIMEOUT_S:g}s:[/] is hivebus running there?"
        )
        raise typer.Exit(EXIT_ERROR) from exc
    if truncated:
        stderr_console().print(
            "[yellow]more approval events than one listing reads:[/] newer ones may be "
            "missing; narrow it with --task or --since"
        )
    if json_out:
        typer.echo(json.dumps([request_json(r) for r in pending]))
        return
    if not pending:
        where = f"task {task}" if task else f"the last {since:g}h"
        stderr_console().print(f"no pending approvals in {where}")
        return
    out = Console(highlight=False)
    for request in pending:
        out.print(f"task {request.task_id}, asked {request.ts.isoformat(timespec='seconds')}")
        out.print(request_lines(request), soft_wrap=True)  # commands stay whole, to be copied


def approve(  # noqa: PLR0917 - typer maps each parameter to an option
    approval_id: ApprovalId,
    reason: ReasonOption = "",
    by: ApproverOption = None,
    task: TaskOption = None,
    wait: WaitOption = None,
    json_out: JsonOutcomeOption = False,  # noqa: FBT002 - typer declares flags as booleans
) -> None:
    """Approve a pending call: it runs as asked, once."""
    _decide(
        approval_id,
        Decision.APPROVE,
        by=by,
        reason=reason,
        task=task,
        wait=wait,
        json_out=json_out,
    )


def reject(  # noqa: PLR0917 - typer maps each parameter to an option
    approval_id: ApprovalId,
    reason: Annotated[str, typer.Option("--reason", help="Why not; the model reads it.")],
    by: ApproverOption = None,
    task: TaskOption = None,
    wait: WaitOption = None,
    json_out: JsonOutcomeOption = False,  # noqa: FBT002 - typer declares flags as booleans
) -> None:
    """Reject a pending call: it does not run; the model gets the reason and goes on."""
    if not reason.strip():
        stderr_console().print("[red]--reason must say why[/]: the model reads it")
        raise typer.Exit(EXIT_USAGE)
    _decide(
        approval_id,
        Decision.REJECT,
        by=by,
        reason=reason,
        task=task,
        wait=wait,
        json_out=json_out,
    )


def modify(  # noqa: PLR0917 - typer maps each parameter to an option
    approval_id: ApprovalId,
    args: Annotated[
        str, typer.Option("--args", help="The call's new arguments, all of them, as JSON.")
    ],
    reason: ReasonOption = "",
    by: ApproverOption = None,
    task: TaskOption = None,
    wait: WaitOption = None,
    json_out: JsonOutcomeOption = False,  # noqa: FBT002 - typer declares flags as booleans
) -> None:
    """Approve a pending call with other arguments (checked against the tool's schema)."""
    arguments = arguments_or_exit(args)
    _decide(
        approval_id,
        Decision.MODIFY,
        by=by,
        reason=reason,
        arguments=arguments,
        task=task,
        wait=wait,
        json_out=json_out,
    )


def answer(  # noqa: PLR0917 - typer maps each parameter to an option
    approval_id: ApprovalId,
    text: Annotated[str, typer.Argument(help="The answer the model gets.")],
    by: ApproverOption = None,
    task: TaskOption = None,
    wait: WaitOption = None,
    json_out: JsonOutcomeOption = False,  # noqa: FBT002 - typer declares flags as booleans
) -> None:
    """Answer a question a run asked a person (`ask_human`)."""
    _decide(
        approval_id,
        Decision.RESPOND,
        by=by,
        answer=text,
        task=task,
        wait=wait,
        json_out=json_out,
    )
