"""What the CLI's commands share: exit codes, common options, settings and file loading."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from hivebus.console.client import PlanFileError, load_plan_file
from hivebus.console.render import stderr_console
from hivebus.core import ConfigError, HivebusConfig, Settings, configure_logging, load_config

EXIT_USAGE = 2
"""Exit code of a usage error: a bad option, an unreadable plan or configuration."""

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="hivebus.yaml (default: $HIVEBUS_CONFIG_FILE or ./hivebus.yaml)."
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the final event as JSON on the last stdout line.")
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Embedded server store (kept); temporary when unset."),
]
VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="Log at info level to stderr.")
]


def settings_from_env(*, verbose: bool = False, quiet_default: bool = True) -> Settings:
    """Settings from the environment; logs quiet (warnings) unless asked otherwise."""
    settings = Settings()
    level = settings.log_level
    if quiet_default and "HIVEBUS_LOG_LEVEL" not in os.environ:
        level = "info" if verbose else "warning"
    configure_logging(settings.log_format, level)
    return settings


def config_or_exit(path: Path | None, settings: Settings) -> HivebusConfig:
    """The configuration file, or exit 2 with what is wrong in it."""
    try:
        return load_config(path or settings.config_file)
    except ConfigError as exc:
        stderr_console().print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(EXIT_USAGE) from exc


def plan_or_exit(path: Path, task_id: str | None = None) -> dict[str, Any]:
    """A plan file as a submission body, or exit 2 with why it cannot be read."""
    try:
        return load_plan_file(path, task_id)
    except PlanFileError as exc:
        stderr_console().print(f"[red]plan error:[/] {exc}")
        raise typer.Exit(EXIT_USAGE) from exc


def url_or_exit(settings: Settings) -> str:
    """The server URL from HIVEBUS_NATS_URL, or exit 2 saying to set it."""
    if not settings.nats_url:
        stderr_console().print(
            "[red]no server:[/] set HIVEBUS_NATS_URL (for example nats://127.0.0.1:4222)"
        )
        raise typer.Exit(EXIT_USAGE)
    return settings.nats_url


SecureOption = Annotated[
    bool,
    typer.Option(
        "--secure",
        help="Run the embedded server with the shipped NATS identities and permissions, each "
        "service as its own identity (what a deployment runs).",
    ),
]
