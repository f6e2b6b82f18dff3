"""`hivebus golden record` and `hivebus golden run`.

Exit codes of `run`: 0 every golden task met its expectations, 1 one did not, 2 usage error
(a golden directory, configuration or option that cannot be used).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from hivebus.console.client import HiveClient
from hivebus.console.golden.files import GoldenError, golden_dirs, load_golden
from hivebus.console.golden.record import record_task
from hivebus.console.golden.replay import (
    DEFAULT_TIMEOUT_S,
    GoldenOutcome,
    Source,
    replay_config,
    run_golden,
)
from hivebus.console.options import (
    EXIT_USAGE,
    ConfigOption,
    VerboseOption,
    settings_from_env,
    url_or_exit,
)
from hivebus.console.render import stderr_console
from hivebus.core import Settings

EXIT_DIFFERENT = 1

golden_app = typer.Typer(
    help="Golden runs: a finished task recorded as a directory, replayed as a regression test.",
    no_args_is_help=True,
)


def _usage_error(message: str) -> typer.Exit:
    stderr_console().print(f"[red]golden:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


@golden_app.command()
def record(
    task_id: Annotated[str, typer.Argument(help="The finished task to record.")],
    to: Annotated[Path, typer.Option("--to", help="The golden directory to write.")],
    config: ConfigOption = None,
    force: Annotated[bool, typer.Option(help="Write into a directory that is not empty.")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Record a finished task (on HIVEBUS_NATS_URL) as a golden directory to commit and edit."""
    settings = settings_from_env(verbose=verbose)
    url = url_or_exit(settings)
    chosen = config or (settings.config_file if settings.config_file.exists() else None)

    async def main() -> str:
        async with HiveClient(url, settings) as client:
            run = await record_task(client, task_id, to, config=chosen, force=force)
        return f"recorded {task_id} ({run.status}, {len(run.subtasks)} sub-tasks) to {to}"

    try:
        message = asyncio.run(main())
    except GoldenError as exc:
        raise _usage_error(str(exc)) from exc
    stderr_console().print(escape(message), soft_wrap=True)


def _print(outcome: GoldenOutcome) -> None:
    console = stderr_console()
    if outcome.passed:
        console.print(f"[green]PASS[/] {escape(outcome.name)}", soft_wrap=True)
        return
    console.print(f"[red]FAIL[/] {escape(outcome.name)} ({escape(str(outcome.path))})")
    for line in outcome.differences:
        console.print(f"  {escape(line)}", soft_wrap=True)


async def run_all(
    paths: list[Path],
    *,
    settings: Settings,
    config: Path | None,
    models: Source,
    tools: Source,
    timeout_s: float,
) -> list[GoldenOutcome]:
    """Load every golden directory first (any bad one fails them all), then replay each."""
    goldens = [load_golden(path) for path in golden_dirs(paths)]
    configs = [replay_config(golden, config, settings) for golden in goldens]
    outcomes = []
    for golden, cfg in zip(goldens, configs, strict=True):
        outcomes.append(
            await run_golden(
                golden,
                settings=settings,
                config=cfg,
                models=models,
                tools=tools,
                timeout_s=timeout_s,
            )
        )
    return outcomes


@golden_app.command()
def run(  # noqa: PLR0917 - typer maps each parameter to an option
    paths: Annotated[
        list[Path], typer.Argument(help="Golden directories, or directories holding them.")
    ],
    models: Annotated[
        Source,
        typer.Option(help="recorded: replay the recorded turns; live: call the configured models."),
    ] = Source.RECORDED,
    tools: Annotated[
        Source,
        typer.Option(
            help="live: the real tools, in a temporary workspace; recorded: the answers recorded."
        ),
    ] = Source.LIVE,
    config: ConfigOption = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds each golden task may take.")
    ] = DEFAULT_TIMEOUT_S,
    json_out: Annotated[bool, typer.Option("--json", help="Print the outcomes as JSON.")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Replay golden tasks on an embedded server; print what changed; exit 0 when all pass."""
    settings = settings_from_env(verbose=verbose)
    try:
        outcomes = asyncio.run(
            run_all(
                paths,
                settings=settings,
                config=config,
                models=models,
                tools=tools,
                timeout_s=timeout,
            )
        )
    except GoldenError as exc:
        raise _usage_error(str(exc)) from exc
    for outcome in outcomes:
        _print(outcome)
    if json_out:
        typer.echo(json.dumps([outcome.as_json() for outcome in outcomes]))
    raise typer.Exit(0 if all(o.passed for o in outcomes) else EXIT_DIFFERENT)
