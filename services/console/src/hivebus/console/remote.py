"""Commands that talk to a running hivebus (HIVEBUS_NATS_URL): submit, watch, status, cancel."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hivebus.console.client import HiveClient
from hivebus.console.options import (
    JsonOption,
    plan_or_exit,
    settings_from_env,
    url_or_exit,
)
from hivebus.console.render import EXIT_ERROR, follow_to_end, report, stderr_console
from hivebus.core import telemetry


def submit(
    plan: Annotated[Path, typer.Argument(help="Plan file (YAML).")],
    wait: Annotated[bool, typer.Option("--wait", help="Follow the task to its end.")] = False,
    json_out: JsonOption = False,
    task_id: Annotated[
        str | None, typer.Option(help="Task id (default: from the file, or generated).")
    ] = None,
    traceparent: Annotated[
        str | None,
        typer.Option(help="W3C traceparent of a trace the task joins (default: its own)."),
    ] = None,
) -> None:
    """Submit a plan to a running hivebus (HIVEBUS_NATS_URL); print the task id."""
    settings = settings_from_env()
    url = url_or_exit(settings)
    body = plan_or_exit(plan, task_id)
    if traceparent is not None and telemetry.parse_traceparent(traceparent) is None:
        raise typer.BadParameter(
            "not a W3C traceparent (00-<32 hex trace id>-<16 hex span id>-<2 hex flags>)",
            param_hint="--traceparent",
        )

    async def main() -> int:
        async with HiveClient(url, settings) as client:
            submitted = await client.submit(body, traceparent)
            if not wait:
                typer.echo(json.dumps({"task_id": submitted}) if json_out else submitted)
                return 0
            result = await follow_to_end(client, submitted, stderr_console(), None)
            return report(result, json_out=json_out)

    raise typer.Exit(asyncio.run(main()))


def watch(task_id: Annotated[str, typer.Argument()], json_out: JsonOption = False) -> None:
    """Follow a task's events from its start until it finishes."""
    settings = settings_from_env()
    url = url_or_exit(settings)

    async def main() -> int:
        async with HiveClient(url, settings) as client:
            return report(
                await follow_to_end(client, task_id, stderr_console(), None), json_out=json_out
            )

    raise typer.Exit(asyncio.run(main()))


def status(task_id: Annotated[str, typer.Argument()], json_out: JsonOption = False) -> None:
    """Show a task's current state from the task-state store."""
    settings = settings_from_env()
    url = url_or_exit(settings)

    async def main() -> int:
        async with HiveClient(url, settings) as client:
            meta, states, result = await client.status(task_id)
        if meta is None:
            stderr_console().print(f"[red]no task {task_id!r}[/]")
            return EXIT_ERROR
        if json_out:
            typer.echo(
                json.dumps(
                    {
                        "task_id": task_id,
                        "status": meta.status.value,
                        "reason": meta.reason,
                        "finished": meta.finished,
                        "total": meta.total,
                        "planning": meta.planning.model_dump(mode="json"),
                        "subtasks": [s.model_dump(mode="json") for s in states],
                        "result": result.model_dump(mode="json") if result else None,
                    }
                )
            )
        else:
            out = Console()
            out.print(
                f"task {task_id}: {meta.status.value} "
                f"({meta.finished}/{meta.total} sub-tasks finished)"
            )
            plan = meta.planning
            if plan.source == "planned":
                out.print(
                    f"  plan: planned, generation {plan.generation}, "
                    f"{plan.corrections} correction(s)"
                    + (" (the planner is at work)" if plan.generation == 0 else "")
                )
            for state in states:
                out.print(f"  {state.id:24} {state.status.value:16} {state.reason}")
                if state.pending_approvals:
                    out.print(
                        f"    waiting for {', '.join(state.pending_approvals)}: "
                        f"`hivebus approvals --task {task_id}` shows how to answer"
                    )
        return 0

    raise typer.Exit(asyncio.run(main()))


def cancel(
    task_id: Annotated[str, typer.Argument()],
    reason: Annotated[
        str, typer.Option(help="Why; recorded on the task.")
    ] = "cancelled by request",
) -> None:
    """Cancel a task: runs stop at their next step boundary; the task ends `cancelled`."""
    settings = settings_from_env()
    url = url_or_exit(settings)

    async def main() -> None:
        async with HiveClient(url, settings) as client:
            await client.cancel(task_id, reason)

    asyncio.run(main())
    typer.echo(f"cancel requested for {task_id}")
