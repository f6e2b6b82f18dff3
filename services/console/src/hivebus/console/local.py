"""Commands that run hivebus here: `run`, `demo`, `up` (everything) and `serve` (one service)."""

from __future__ import annotations

import asyncio
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console

from hivebus.agent.startup import start_agent
from hivebus.console import demo as demo_assets
from hivebus.console.approval_commands import ApproverOption, approver_or_exit
from hivebus.console.client import HiveClient
from hivebus.console.demo_approval import DemoAnswer, DemoApprover, outbox_lines
from hivebus.console.options import (
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
from hivebus.console.render import follow_to_end, report, stderr_console
from hivebus.console.stack import LocalStack, provision_all
from hivebus.contracts import TaskFinished, TaskRejected
from hivebus.core import HivebusConfig, Settings, telemetry
from hivebus.knowledge.repo import GitRepo
from hivebus.knowledge.service import start_knowledge
from hivebus.orchestrator.service import start_orchestrator

DEFAULT_DEMO_MODEL = "claude-sonnet-4-5"


class Scenario(StrEnum):
    """Bundled demo plans."""

    HAPPY = "happy"
    FAILURE = "failure"
    APPROVAL = "approval"


SCENARIO_CONFIGS: dict[Scenario, str] = {Scenario.APPROVAL: "hivebus-approval.yaml"}
"""A scenario's own configuration in the demo folder; the others use `hivebus.yaml`."""


class Service(StrEnum):
    """Services `serve` can run."""

    ORCHESTRATOR = "orchestrator"
    AGENT = "agent"
    KNOWLEDGE = "knowledge"


Decider = Callable[[HiveClient], Callable[[BaseModel], Awaitable[None]]]
"""Given the client, what sees every event of the task (the approval demo's person)."""


def _demo_person(console: Console, answer: DemoAnswer | None, by: str) -> Decider:
    """The approval demo's person: asks on a terminal unless told (`--approve`)."""
    interactive = answer is None and sys.stdin.isatty()

    def person(client: HiveClient) -> Callable[[BaseModel], Awaitable[None]]:
        return DemoApprover(client, console, answer=answer, interactive=interactive, by=by).on_event

    return person


async def _run_local(
    body: dict[str, Any],
    *,
    settings: Settings,
    config: HivebusConfig,
    data_dir: Path | None,
    timeout_s: float,
    decider: Decider | None = None,
) -> TaskFinished | TaskRejected:
    console = stderr_console()
    async with (
        LocalStack(settings, config, data_dir=data_dir) as stack,
        HiveClient(stack.url, settings) as client,
    ):
        task_id = await client.submit(body)
        console.print(f"submitted task [bold]{task_id}[/] on {stack.url}")
        return await follow_to_end(
            client,
            task_id,
            console,
            timeout_s,
            nats_url=stack.url,
            on_event=decider(client) if decider is not None else None,
        )


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
    raise typer.Exit(report(result, json_out=json_out))


def demo(  # noqa: PLR0917 - typer maps each parameter to an option
    scenario: Annotated[
        Scenario,
        typer.Option(
            help="happy: everything completes; failure: one researcher gets stuck; "
            "approval: an email waits for a person's approval."
        ),
    ] = Scenario.HAPPY,
    approve: Annotated[
        DemoAnswer | None,
        typer.Option(
            help="approval: decide without asking (default: ask on a terminal, else yes).",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOption = False,
    model: Annotated[
        str, typer.Option(help="Claude model used when an API key is set.")
    ] = DEFAULT_DEMO_MODEL,
    data_dir: DataDirOption = None,
    by: ApproverOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Three parallel research sub-tasks, a synthesis of them, a review of it.

    With `--scenario approval`, an email that waits for a person instead:
    y/n/m on a terminal, or as `--approve yes|no|modify` says.
    `--data-dir` keeps the workspace (and its outbox) there too.

    Needs no API key: without ANTHROPIC_API_KEY every agent uses a scripted model.
    With a key, the agents use Claude (`--model`).
    """
    settings = settings_from_env(verbose=verbose)
    assets = Path(demo_assets.__file__).parent
    cfg = config_or_exit(assets / SCENARIO_CONFIGS.get(scenario, "hivebus.yaml"), settings)
    body = plan_or_exit(assets / f"{scenario.value}.yaml")
    console = stderr_console()
    decider = (
        _demo_person(console, approve, approver_or_exit(by))
        if scenario == Scenario.APPROVAL
        else None
    )
    with tempfile.TemporaryDirectory(prefix="hivebus-demo-") as tmp:
        workspace = (data_dir or Path(tmp)) / "workspace"
        cfg = cfg.model_copy(update={"workspace": workspace})
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
            _run_local(
                body,
                settings=settings,
                config=cfg,
                data_dir=data_dir,
                timeout_s=600.0,
                decider=decider,
            )
        )
        history = GitRepo(knowledge).log(limit=20) if (knowledge / ".git").exists() else []
        console.print(f"the knowledge store's log ({knowledge}):")
        for entry in history:
            console.print(f"  {entry.commit[:8]}  {entry.author:24}  {entry.subject}")
        if scenario == Scenario.APPROVAL:
            for line in outbox_lines(workspace):
                console.print(line, soft_wrap=True)
    raise typer.Exit(report(result, json_out=json_out))


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


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

    attributes = {"hivebus.role": role} if role is not None else {}
    tracing = telemetry.configure(settings, service.value, **attributes)

    async def main() -> None:
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
            tracing.shutdown()  # export what is buffered before the process ends

    asyncio.run(main())
