"""The `hivebus` command line: run, demo, up, serve, submit, watch, status, schemas, asyncapi."""

from __future__ import annotations

import asyncio
import json
import signal
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from hivebus.console import demo as demo_assets
from hivebus.console.client import HiveClient
from hivebus.console.dlq import dlq_app
from hivebus.console.kb import kb_app
from hivebus.console.options import (
    EXIT_ERROR,
    EXIT_USAGE,
    ConfigOption,
    DataDirOption,
    JsonOption,
    VerboseOption,
    config_or_exit,
    plan_or_exit,
    settings_from_env,
    url_or_exit,
)
from hivebus.console.render import (
    EXIT_CODES,
    EXIT_REJECTED,
    progress_line,
    stderr_console,
    summary_table,
)
from hivebus.console.stack import LocalStack, provision_all
from hivebus.contracts import TaskFinished, TaskRejected, json_schemas
from hivebus.core import HivebusConfig, Settings
from hivebus.knowledge.repo import GitRepo

app = typer.Typer(
    help="hivebus: LLM agents as independent services on NATS JetStream.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(dlq_app, name="dlq")
app.add_typer(kb_app, name="kb")

DEFAULT_DEMO_MODEL = "claude-sonnet-4-5"


class Scenario(StrEnum):
    """Bundled demo plans."""

    HAPPY = "happy"
    FAILURE = "failure"


class Service(StrEnum):
    """Services `serve` can run."""

    ORCHESTRATOR = "orchestrator"
    AGENT = "agent"
    KNOWLEDGE = "knowledge"


async def _follow(
    client: HiveClient, task_id: str, console: Console, timeout_s: float | None
) -> TaskFinished | TaskRejected:
    async with asyncio.timeout(timeout_s):
        async for _kind, event in client.follow(task_id):
            line = progress_line(event)
            if line:
                console.print(line)
            if isinstance(event, TaskFinished | TaskRejected):
                return event
    raise TimeoutError(task_id)


def _report(result: TaskFinished | TaskRejected, json_out: bool) -> int:
    """Print the final event (JSON or a table) and return the exit code."""
    if json_out:
        typer.echo(result.model_dump_json())
    elif isinstance(result, TaskFinished):
        Console().print(summary_table(result))
        if result.output is not None:
            Console().print_json(json.dumps(result.output, default=str))
    if isinstance(result, TaskRejected):
        return EXIT_REJECTED
    return EXIT_CODES.get(result.status, EXIT_ERROR)


async def _run_local(
    body: dict[str, Any],
    *,
    settings: Settings,
    config: HivebusConfig,
    data_dir: Path | None,
    timeout_s: float,
) -> TaskFinished | TaskRejected:
    console = stderr_console()
    async with (
        LocalStack(settings, config, data_dir=data_dir) as stack,
        HiveClient(stack.url, settings) as client,
    ):
        task_id = await client.submit(body)
        console.print(f"submitted task [bold]{task_id}[/] on {stack.url}")
        return await _follow(client, task_id, console, timeout_s)


@app.command()
def run(  # noqa: PLR0917 - typer maps each parameter to an option
    plan: Annotated[Path, typer.Argument(help="Plan file (YAML): goal, budget, subtasks.")],
    config: ConfigOption = None,
    json_out: JsonOption = False,
    data_dir: DataDirOption = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 600.0,
    verbose: VerboseOption = False,
) -> None:
    """Start an embedded nats-server and every service, run one plan to its end, shut down.

    Exit code: 0 completed, 3 partial, 4 failed, 5 timeout, 6 budget_exceeded,
    7 cancelled, 8 rejected, 1 unexpected error, 2 usage error.
    """
    settings = settings_from_env(verbose=verbose)
    cfg = config_or_exit(config, settings)
    body = plan_or_exit(plan)
    result = asyncio.run(
        _run_local(body, settings=settings, config=cfg, data_dir=data_dir, timeout_s=timeout)
    )
    raise typer.Exit(_report(result, json_out))


@app.command()
def demo(
    scenario: Annotated[
        Scenario,
        typer.Option(help="happy: everything completes; failure: one researcher gets stuck."),
    ] = Scenario.HAPPY,
    json_out: JsonOption = False,
    model: Annotated[
        str, typer.Option(help="Claude model used when an API key is set.")
    ] = DEFAULT_DEMO_MODEL,
    data_dir: DataDirOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Three parallel research sub-tasks, a synthesis of them, a review of it.

    Needs no API key: without ANTHROPIC_API_KEY every agent uses a scripted model.
    With a key, the agents use Claude (`--model`).
    """
    settings = settings_from_env(verbose=verbose)
    assets = Path(demo_assets.__file__).parent
    cfg = config_or_exit(assets / "hivebus.yaml", settings)
    body = plan_or_exit(assets / f"{scenario.value}.yaml")
    console = stderr_console()
    with tempfile.TemporaryDirectory(prefix="hivebus-demo-") as tmp:
        cfg = cfg.model_copy(update={"workspace": Path(tmp) / "workspace"})
        knowledge = Path(tmp) / "knowledge"
        if settings.knowledge_dir is None and data_dir is None:
            settings = settings.model_copy(update={"knowledge_dir": knowledge})
        knowledge = settings.knowledge_dir or (data_dir or Path(tmp)) / "knowledge"
        if settings.anthropic_api_key is not None:
            console.print(f"ANTHROPIC_API_KEY is set: the agents use anthropic:{model}.")
            route = f"anthropic:{model}"
            cfg = cfg.model_copy(
                update={
                    "roles": {
                        n: r.model_copy(update={"model": route}) for n, r in cfg.roles.items()
                    }
                }
            )
            for sub in body["plan"]["subtasks"]:
                sub.pop("model", None)
        else:
            console.print(
                "No ANTHROPIC_API_KEY: the agents use scripted models (no API calls, no cost)."
            )
        result = asyncio.run(
            _run_local(body, settings=settings, config=cfg, data_dir=data_dir, timeout_s=600.0)
        )
        history = GitRepo(knowledge).log(limit=20) if (knowledge / ".git").exists() else []
        console.print(f"the knowledge store's log ({knowledge}):")
        for entry in history:
            console.print(f"  {entry.commit[:8]}  {entry.author:24}  {entry.subject}")
    raise typer.Exit(_report(result, json_out))


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@app.command()
def up(
    config: ConfigOption = None, data_dir: DataDirOption = None, verbose: VerboseOption = False
) -> None:
    """Run every service until Ctrl-C (embedded nats-server unless HIVEBUS_NATS_URL is set)."""
    settings = settings_from_env(verbose=verbose, quiet_default=False)
    cfg = config_or_exit(config, settings)

    async def main() -> None:
        async with LocalStack(settings, cfg, data_dir=data_dir) as stack:
            stderr_console().print(
                f"hivebus is up on {stack.url} (roles: {', '.join(sorted(cfg.roles))}); "
                "Ctrl-C stops"
            )
            await _until_signal()

    asyncio.run(main())


@app.command()
def serve(
    service: Annotated[Service, typer.Argument(help="orchestrator, agent or knowledge")],
    role: Annotated[str | None, typer.Option(help="The agent's role (agent only).")] = None,
    config: ConfigOption = None,
) -> None:
    """Run one service against HIVEBUS_NATS_URL until SIGINT/SIGTERM (as a container runs it).

    The knowledge service keeps its repository in HIVEBUS_KNOWLEDGE_DIR.
    """
    settings = settings_from_env(quiet_default=False)
    cfg = config_or_exit(config, settings)
    url = url_or_exit(settings)
    if service == Service.AGENT and (role is None or role not in cfg.roles):
        stderr_console().print(f"[red]--role must be one of {sorted(cfg.roles)}[/]")
        raise typer.Exit(EXIT_USAGE)

    async def main() -> None:
        from hivebus.console.stack import (  # noqa: PLC0415
            start_agent,
            start_knowledge,
            start_orchestrator,
        )

        await provision_all(url, settings, [role] if role else sorted(cfg.roles))
        if service == Service.ORCHESTRATOR:
            broker = await start_orchestrator(settings, cfg, url)
        elif service == Service.KNOWLEDGE:
            if settings.knowledge_dir is None:
                stderr_console().print("[red]set HIVEBUS_KNOWLEDGE_DIR to the repository[/]")
                raise typer.Exit(EXIT_USAGE)
            broker = await start_knowledge(settings, settings.knowledge_dir, url)
        else:
            assert role is not None  # noqa: S101 - checked above
            broker = await start_agent(settings, cfg, role, url)
        try:
            await _until_signal()
        finally:
            await broker.stop()

    asyncio.run(main())


@app.command()
def submit(
    plan: Annotated[Path, typer.Argument(help="Plan file (YAML).")],
    wait: Annotated[bool, typer.Option("--wait", help="Follow the task to its end.")] = False,
    json_out: JsonOption = False,
    task_id: Annotated[
        str | None, typer.Option(help="Task id (default: from the file, or generated).")
    ] = None,
) -> None:
    """Submit a plan to a running hivebus (HIVEBUS_NATS_URL); print the task id."""
    settings = settings_from_env()
    url = url_or_exit(settings)
    body = plan_or_exit(plan, task_id)

    async def main() -> int:
        async with HiveClient(url, settings) as client:
            submitted = await client.submit(body)
            if not wait:
                typer.echo(json.dumps({"task_id": submitted}) if json_out else submitted)
                return 0
            result = await _follow(client, submitted, stderr_console(), None)
            return _report(result, json_out)

    raise typer.Exit(asyncio.run(main()))


@app.command()
def watch(task_id: Annotated[str, typer.Argument()], json_out: JsonOption = False) -> None:
    """Follow a task's events from its start until it finishes."""
    settings = settings_from_env()
    url = url_or_exit(settings)

    async def main() -> int:
        async with HiveClient(url, settings) as client:
            return _report(await _follow(client, task_id, stderr_console(), None), json_out)

    raise typer.Exit(asyncio.run(main()))


@app.command()
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
            for state in states:
                out.print(f"  {state.id:24} {state.status.value:16} {state.reason}")
        return 0

    raise typer.Exit(asyncio.run(main()))


@app.command()
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


@app.command()
def schemas(
    out: Annotated[Path, typer.Argument(help="Directory to write the JSON Schemas to.")],
) -> None:
    """Export the contracts' JSON Schemas (the repository keeps them in contracts/schemas)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        (out / name).write_text(
            json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    typer.echo(f"wrote {len(json_schemas())} schemas to {out}")


@app.command()
def asyncapi(
    service: Annotated[Service, typer.Argument(help="orchestrator or agent")],
    role: Annotated[str, typer.Option(help="The agent's role (agent only).")] = "researcher",
    config: ConfigOption = None,
) -> None:
    """Print a service's AsyncAPI document (JSON), generated from its FastStream subscribers."""
    from faststream.specification import AsyncAPI  # noqa: PLC0415

    from hivebus.agent.service import build_agent_broker  # noqa: PLC0415
    from hivebus.orchestrator.service import build_orchestrator_broker  # noqa: PLC0415

    settings = settings_from_env()
    cfg = (
        config_or_exit(config, settings)
        if config or settings.config_file.exists()
        else config_or_exit(Path(demo_assets.__file__).parent / "hivebus.yaml", settings)
    )
    url = settings.nats_url or "nats://localhost:4222"
    if service == Service.ORCHESTRATOR:
        broker, _ = build_orchestrator_broker(settings, cfg, url)
    else:
        broker, _ = build_agent_broker(settings, cfg, role, url)
    typer.echo(AsyncAPI(broker, title=f"hivebus {service.value}").to_specification().to_json())


def main() -> None:
    """Console-script entry point."""
    app()
