"""Commands that run hivebus here: `run`, `demo`, `up` (everything) and `serve` (one service)."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel
from rich.console import Console

from hivebus.agent.startup import start_agent
from hivebus.console import demo as demo_assets
from hivebus.console.approval_commands import ApproverOption, approver_or_exit
from hivebus.console.client import HiveClient
from hivebus.console.dashboard.command import announce, serve_until_signal, until_signal
from hivebus.console.dashboard.server import DashboardBindError, DashboardServer
from hivebus.console.demo_approval import DemoAnswer, DemoApprover, outbox_lines
from hivebus.console.health import PROBE_TIMEOUT_S, heartbeat
from hivebus.console.options import (
    EXIT_USAGE,
    ConfigOption,
    DataDirOption,
    JsonOption,
    SecureOption,
    VerboseOption,
    config_or_exit,
    plan_or_exit,
    settings_from_env,
    url_or_exit,
)
from hivebus.console.render import report, stderr_console
from hivebus.console.stack import Decider, LocalStack, provision_all, run_local
from hivebus.core import telemetry
from hivebus.knowledge.repo import GitRepo
from hivebus.knowledge.service import start_knowledge
from hivebus.orchestrator.service import start_orchestrator

DEFAULT_DEMO_MODEL = "claude-sonnet-4-5"


class Scenario(StrEnum):
    """Bundled demo plans."""

    HAPPY = "happy"
    FAILURE = "failure"
    APPROVAL = "approval"
    PLANNED = "planned"


SCENARIO_CONFIGS: dict[Scenario, str] = {Scenario.APPROVAL: "hivebus-approval.yaml"}
"""A scenario's own configuration in the demo folder; the others use `hivebus.yaml`."""


class Service(StrEnum):
    """Services `serve` can run."""

    ORCHESTRATOR = "orchestrator"
    AGENT = "agent"
    KNOWLEDGE = "knowledge"
    DASHBOARD = "dashboard"


def _demo_person(console: Console, answer: DemoAnswer | None, by: str) -> Decider:
    """The approval demo's person: asks on a terminal unless told (`--approve`)."""
    interactive = answer is None and sys.stdin.isatty()

    def person(client: HiveClient) -> Callable[[BaseModel], Awaitable[None]]:
        return DemoApprover(client, console, answer=answer, interactive=interactive, by=by).on_event

    return person


def run(  # noqa: PLR0917 - typer maps each parameter to an option
    plan: Annotated[Path, typer.Argument(help="Plan file (YAML): goal, budget, subtasks.")],
    config: ConfigOption = None,
    json_out: JsonOption = False,
    data_dir: DataDirOption = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 600.0,
    verbose: VerboseOption = False,
    secure: SecureOption = False,
) -> None:
    """Start an embedded nats-server and every service, run one plan to its end, shut down.

    Exit code: 0 completed, 3 partial, 4 failed, 5 timeout, 6 budget_exceeded,
    7 cancelled, 8 rejected, 1 unexpected error, 2 usage error.
    """
    settings = settings_from_env(verbose=verbose)
    cfg = config_or_exit(config, settings)
    body = plan_or_exit(plan)
    result = asyncio.run(
        run_local(
            body,
            settings=settings,
            config=cfg,
            data_dir=data_dir,
            timeout_s=timeout,
            secure=secure,
        )
    )
    raise typer.Exit(report(result, json_out=json_out))


def demo(  # noqa: PLR0917 - typer maps each parameter to an option
    scenario: Annotated[
        Scenario,
        typer.Option(
            help="happy: everything completes; failure: one researcher gets stuck; "
            "approval: an email waits for a person's approval; planned: a goal alone, "
            "planned by the planner role (one mistake corrected), then run."
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
    dashboard: Annotated[
        bool,
        typer.Option(
            "--dashboard",
            help="Serve the dashboard too, print its URL, keep everything up until Ctrl-C.",
        ),
    ] = False,
    dashboard_port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, help="The dashboard's port (default $HIVEBUS_DASHBOARD_PORT, 8700)."
        ),
    ] = None,
    verbose: VerboseOption = False,
    secure: SecureOption = False,
) -> None:
    """Three parallel research sub-tasks, a synthesis of them, a review of it.

    With `--scenario approval`, an email that waits for a person instead:
    y/n/m on a terminal, or as `--approve yes|no|modify` says.
    `--data-dir` keeps the workspace (and its outbox) there too.
    With `--dashboard` (and no `--approve`), the approval is answered in the browser.

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
        if scenario == Scenario.APPROVAL and not (dashboard and approve is None)
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
            for sub in (body.get("plan") or {}).get("subtasks", []):
                sub.pop("model", None)
        else:
            console.print(
                "No ANTHROPIC_API_KEY: the agents use scripted models (no API calls, no cost)."
            )
        result = asyncio.run(
            run_local(
                body,
                settings=settings,
                config=cfg,
                data_dir=data_dir,
                timeout_s=600.0,
                decider=decider,
                dashboard_port=(
                    (settings.dashboard_port if dashboard_port is None else dashboard_port)
                    if dashboard
                    else None
                ),
                secure=secure,
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


def up(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    dashboard: Annotated[
        bool, typer.Option(help="Serve the dashboard too (HIVEBUS_DASHBOARD_HOST/PORT).")
    ] = True,
    verbose: VerboseOption = False,
    secure: SecureOption = False,
) -> None:
    """Run every service and the dashboard until Ctrl-C.

    The nats-server is embedded unless HIVEBUS_NATS_URL is set. A dashboard port in use is
    reported and the rest runs without it. With `--secure`, the `client` and `approver`
    credentials for commands run beside it are written to `<data dir>/credentials/`.
    """
    settings = settings_from_env(verbose=verbose, quiet_default=False)
    cfg = config_or_exit(config, settings)
    if secure and settings.nats_url:
        stderr_console().print("[red]--secure runs the embedded server: unset HIVEBUS_NATS_URL[/]")
        raise typer.Exit(EXIT_USAGE)

    async def main() -> None:
        console = stderr_console()
        async with LocalStack(settings, cfg, data_dir=data_dir, secure=secure) as stack:
            console.print(
                f"hivebus is up on {stack.url} (roles: {', '.join(sorted(cfg.roles))}); "
                "Ctrl-C stops"
            )
            if stack.identities is not None:
                where = (data_dir or stack.server_dir()) / "credentials"
                for name in ("client", "approver"):
                    path = stack.identities.credentials_file(where / f"{name}.env", name)
                    console.print(f"{name} credentials: source {path}", soft_wrap=True)
            if not dashboard:
                await until_signal()
                return
            try:
                async with DashboardServer(stack.dashboard_settings(), stack.url) as board:
                    announce(console, board, settings)
                    await until_signal()
                    # The services stop first: nothing more is dispatched while the page
                    # closes, and what runs now is what a restart resumes.
                    await stack.stop_services()
            except DashboardBindError as exc:
                console.print(f"[yellow]no dashboard:[/] {exc}", soft_wrap=True)
                await until_signal()

    asyncio.run(main())


def serve(
    service: Annotated[Service, typer.Argument(help="orchestrator, agent, knowledge or dashboard")],
    role: Annotated[str | None, typer.Option(help="The agent's role (agent only).")] = None,
    config: ConfigOption = None,
) -> None:
    """Run one service against HIVEBUS_NATS_URL until SIGINT/SIGTERM (as a container runs it).

    The knowledge service keeps its repository in HIVEBUS_KNOWLEDGE_DIR; the dashboard
    listens on HIVEBUS_DASHBOARD_HOST:HIVEBUS_DASHBOARD_PORT and needs no configuration file.
    """
    settings = settings_from_env(quiet_default=False)
    if service == Service.DASHBOARD:
        url = url_or_exit(settings)

        async def dashboard_main() -> None:
            if settings.provision:
                await provision_all(url, settings, [])
            await serve_until_signal(settings, url, None, None)

        asyncio.run(dashboard_main())
        return
    cfg = config_or_exit(config, settings)
    url = url_or_exit(settings)
    if service == Service.AGENT and (role is None or role not in cfg.roles):
        stderr_console().print(f"[red]--role must be one of {sorted(cfg.roles)}[/]")
        raise typer.Exit(EXIT_USAGE)

    attributes = {"hivebus.role": role} if role is not None else {}
    tracing = telemetry.configure(settings, service.value, **attributes)

    async def main() -> None:
        if settings.provision:
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
            async with heartbeat(
                settings.health_file, service.value, lambda: broker.ping(PROBE_TIMEOUT_S)
            ):
                await until_signal()
        finally:
            await broker.stop()
            tracing.shutdown()  # export what is buffered before the process ends

    asyncio.run(main())
