"""`hivebus kb`: the knowledge store's history, notes and search, for people."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hivebus.console.options import settings_from_env, url_or_exit
from hivebus.console.render import EXIT_ERROR, stderr_console
from hivebus.contracts import subjects
from hivebus.contracts.knowledge import NoteLogResult, NoteReadResult, NoteSearchResult
from hivebus.core import Publisher, Settings, jetstream, new_broker
from hivebus.core.knowledge_client import KnowledgeClient

kb_app = typer.Typer(help="The knowledge store: a Git repository of Markdown notes.")


async def _with_client(settings: Settings, what: str, arg: str | None, limit: int) -> object:
    broker = new_broker(url_or_exit(settings), "kb-cli", settings)
    await broker.start()
    try:
        kv = await (await jetstream(broker)).key_value(subjects.KNOWLEDGE_BUCKET)
        client = KnowledgeClient(broker, kv, Publisher(broker, settings.publish_timeout_s))
        if what == "log":
            return await client.log(arg, limit)
        if what == "show":
            return await client.read(arg or "")
        return await client.search(arg or "", limit)
    finally:
        await broker.stop()


@kb_app.command("log")
def kb_log(
    path: Annotated[str | None, typer.Argument(help="Only this note's history.")] = None,
    limit: Annotated[int, typer.Option(help="How many commits.")] = 20,
) -> None:
    """Commits, newest first: who wrote what, for which task."""
    settings = settings_from_env()
    result = asyncio.run(_with_client(settings, "log", path, limit))
    assert isinstance(result, NoteLogResult)  # noqa: S101 - narrowed for the type checker
    table = Table(title="knowledge log")
    for column in ("commit", "date", "author", "subject"):
        table.add_column(column)
    for entry in result.entries:
        table.add_row(entry.commit[:10], entry.date, entry.author, entry.subject)
    Console().print(table)


@kb_app.command("show")
def kb_show(path: Annotated[str, typer.Argument(help="A note path, e.g. shared/plan.md.")]) -> None:
    """Print a note (front matter and body) and its revision."""
    settings = settings_from_env()
    result = asyncio.run(_with_client(settings, "show", path, 1))
    assert isinstance(result, NoteReadResult)  # noqa: S101 - narrowed for the type checker
    if not result.found:
        stderr_console().print(f"[red]{result.error or f'no note at {path}'}[/]")
        raise typer.Exit(EXIT_ERROR)
    stderr_console().print(f"revision {result.revision}")
    typer.echo(result.content)


@kb_app.command("search")
def kb_search(
    query: Annotated[str, typer.Argument()],
    limit: Annotated[int, typer.Option(help="How many hits.")] = 10,
) -> None:
    """Full-text search over every note, best first, with snippets."""
    settings = settings_from_env()
    result = asyncio.run(_with_client(settings, "search", query, limit))
    assert isinstance(result, NoteSearchResult)  # noqa: S101 - narrowed for the type checker
    for hit in result.hits:
        Console().print(f"[bold]{hit.path}[/] ({hit.score:.2f}) {hit.title}\n    {hit.snippet}")
