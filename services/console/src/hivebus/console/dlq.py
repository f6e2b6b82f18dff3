"""`hivebus dlq`: list, show and replay dead letters."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hivebus.console.client import HiveClient, ReplayError
from hivebus.console.options import JsonOption, settings_from_env, url_or_exit
from hivebus.console.render import EXIT_ERROR, stderr_console
from hivebus.contracts import DeadLetter

dlq_app = typer.Typer(help="The dead-letter queue: what could not finish, and replaying it.")


@dlq_app.command("list")
def dlq_list(json_out: JsonOption = False) -> None:
    """List dead letters (oldest first) with their ID for `show` and `replay`."""
    settings = settings_from_env()
    url = url_or_exit(settings)

    async def main() -> list[tuple[int, DeadLetter]]:
        async with HiveClient(url, settings) as client:
            return await client.dead_letters()

    letters = asyncio.run(main())
    if json_out:
        typer.echo(json.dumps([{"id": seq, **d.model_dump(mode="json")} for seq, d in letters]))
        return
    table = Table(title=f"{len(letters)} dead letters")
    for column in ("id", "when", "task", "sub-task", "why", "deliveries", "error"):
        table.add_column(column)
    for seq, d in letters:
        table.add_row(
            str(seq),
            d.ts.strftime("%Y-%m-%d %H:%M:%S"),
            d.task_id,
            d.subtask_id or "-",
            d.why,
            str(d.deliveries),
            (d.errors or [""])[-1],
        )
    Console().print(table)


@dlq_app.command("show")
def dlq_show(dlq_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Print one dead letter as JSON: original message, checkpoint, usage, error chain."""
    settings = settings_from_env()
    url = url_or_exit(settings)

    async def main() -> DeadLetter | None:
        async with HiveClient(url, settings) as client:
            return await client.dead_letter(dlq_id)

    letter = asyncio.run(main())
    if letter is None:
        stderr_console().print(f"[red]no dead letter {dlq_id}[/]")
        raise typer.Exit(EXIT_ERROR)
    typer.echo(letter.model_dump_json(indent=2))


@dlq_app.command("replay")
def dlq_replay(
    dlq_id: Annotated[int, typer.Argument(metavar="ID")],
    from_scratch: Annotated[
        bool, typer.Option("--from-scratch", help="Start over instead of from the checkpoint.")
    ] = False,
) -> None:
    """Submit a dead letter again as a new task (from its checkpoint by default); print its id."""
    settings = settings_from_env()
    url = url_or_exit(settings)

    async def main() -> str:
        async with HiveClient(url, settings) as client:
            return await client.replay(dlq_id, from_checkpoint=not from_scratch)

    try:
        typer.echo(asyncio.run(main()))
    except ReplayError as exc:
        stderr_console().print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_ERROR) from exc
