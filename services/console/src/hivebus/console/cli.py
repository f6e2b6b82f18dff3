"""The `hivebus` command line: every command, registered on one Typer app.

Commands that run services here live in `local`, commands that talk to a running hivebus in
`remote`, the approval commands in `approval_commands`, the DLQ and knowledge-store groups in
`dlq` and `kb`, the dashboard in `dashboard.command`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hivebus.agent.startup import build_agent_broker
from hivebus.console import approval_commands, deploy_commands, local, remote, stats_command
from hivebus.console import demo as demo_assets
from hivebus.console.dashboard.command import dashboard
from hivebus.console.dlq import dlq_app
from hivebus.console.golden.command import golden_app
from hivebus.console.kb import kb_app
from hivebus.console.local import Service
from hivebus.console.options import ConfigOption, config_or_exit, settings_from_env
from hivebus.contracts import json_schemas
from hivebus.orchestrator.service import build_orchestrator_broker

app = typer.Typer(
    help="hivebus: LLM agents as independent services on NATS JetStream.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(dlq_app, name="dlq")
app.add_typer(kb_app, name="kb")
app.add_typer(golden_app, name="golden")
app.command()(local.run)
app.command()(local.demo)
app.command()(local.up)
app.command()(local.serve)
app.command()(deploy_commands.provision)
app.command()(deploy_commands.health)
app.command(name="nats-auth")(deploy_commands.nats_auth)
app.command()(dashboard)
app.command()(remote.submit)
app.command()(remote.watch)
app.command()(remote.status)
app.command()(remote.cancel)
app.command()(stats_command.stats)
app.command()(approval_commands.approvals)
app.command()(approval_commands.approve)
app.command()(approval_commands.reject)
app.command()(approval_commands.modify)
app.command()(approval_commands.answer)


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

    settings = settings_from_env()
    cfg = (
        config_or_exit(config, settings)
        if config or settings.config_file.exists()
        else config_or_exit(Path(demo_assets.__file__).parent / "hivebus.yaml", settings)
    )
    url = settings.nats_url or "nats://localhost:4222"
    if service == Service.ORCHESTRATOR:
        broker = build_orchestrator_broker(settings, url)
    else:
        broker = build_agent_broker(settings, cfg, role, url)
    typer.echo(AsyncAPI(broker, title=f"hivebus {service.value}").to_specification().to_json())


def main() -> None:
    """Console-script entry point."""
    app()
