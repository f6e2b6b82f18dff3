"""Run hivebus locally: an embedded (or configured) nats-server, the orchestrator, every role.

`run_local` runs one task on such a stack (`run`, `demo`), beside a dashboard when asked.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from faststream.nats import NatsBroker
from pydantic import BaseModel

from hivebus.agent.replay import Replay
from hivebus.agent.startup import start_agent
from hivebus.console.client import HiveClient
from hivebus.console.dashboard.command import announce, until_signal
from hivebus.console.dashboard.server import DashboardServer
from hivebus.console.render import follow_to_end, stderr_console
from hivebus.console.secure import LocalIdentities
from hivebus.contracts import TaskFinished, TaskRejected
from hivebus.core import (
    EmbeddedNats,
    HivebusConfig,
    Settings,
    get_logger,
    jetstream,
    new_broker,
    telemetry,
)
from hivebus.core.identities import agent_identity_name
from hivebus.core.topology import provision
from hivebus.knowledge.service import start_knowledge
from hivebus.orchestrator.service import start_orchestrator

log = get_logger(__name__)


async def provision_all(url: str, settings: Settings, roles: list[str]) -> None:
    """Create streams, buckets and consumers on the server at `url` (idempotent)."""
    broker = new_broker(url, "provision", settings)
    try:
        js = await jetstream(broker)
        await provision(js, settings, roles)
    finally:
        await broker.stop()


class LocalStack:
    """Everything in one process: `async with LocalStack(...) as stack: stack.url`."""

    def __init__(
        self,
        settings: Settings,
        config: HivebusConfig,
        *,
        data_dir: Path | None = None,
        services: bool = True,
        secure: bool = False,
        replay: Replay | None = None,
    ) -> None:
        """Use `settings.nats_url` if set, else an embedded server storing in `data_dir`.

        With `replay` (a golden run), every agent plays its models (and maybe its tools).

        With `secure`, the embedded server has the shipped identities and permissions
        (`hivebus.console.secure`), and every service connects as its own identity.
        """
        if secure and settings.nats_url:
            raise ValueError("secure runs the embedded server: unset HIVEBUS_NATS_URL")
        self.identities = LocalIdentities(config.roles) if secure else None
        self.settings = settings
        self.config = config
        self.data_dir = data_dir
        self.services = services
        self.replay = replay
        self.server: EmbeddedNats | None = None
        self.brokers: list[NatsBroker] = []
        self.url = settings.nats_url or ""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.telemetries: list[telemetry.Telemetry] = []

    def knowledge_root(self) -> Path:
        """Where the knowledge repository lives: configured, in the data dir, or temporary."""
        if self.settings.knowledge_dir is not None:
            return self.settings.knowledge_dir
        if self.data_dir is not None:
            return self.data_dir / "knowledge"
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="hivebus-kb-")
        return Path(self._tmp.name) / "knowledge"

    def _telemetry(self, service: str, role: str | None = None) -> AbstractContextManager[object]:
        """Bind a service's own telemetry while it starts, so its spans carry its name."""
        made = telemetry.build(
            self.settings, service, **({"hivebus.role": role} if role is not None else {})
        )
        if not made.enabled:
            return contextlib.nullcontext()
        self.telemetries.append(made)
        return telemetry.bound(made)

    def server_dir(self) -> Path:
        """Where the embedded server keeps its store and configuration."""
        if self.server is None:
            raise ValueError("no embedded server: the stack uses HIVEBUS_NATS_URL")
        return self.server.data_dir

    def settings_as(self, identity: str) -> Settings:
        """The settings a part of this stack connects with: its own identity when secure."""
        if self.identities is None:
            return self.settings
        return self.identities.settings(self.settings, identity)

    def dashboard_settings(self) -> Settings:
        """The dashboard's: reading as `dashboard`, deciding as `approver` when secure."""
        if self.identities is None:
            return self.settings
        return self.settings_as("dashboard").model_copy(
            update={
                "approver_user": "approver",
                "approver_password": self.settings_as("approver").nats_password,
            }
        )

    async def __aenter__(self) -> Self:
        """Start the server (if embedded), provision, start the services."""
        if not self.settings.nats_url:
            authorization = self.identities.authorization() if self.identities else ""
            self.server = EmbeddedNats(self.data_dir, authorization=authorization)
            await self.server.start()
            self.url = self.server.url
        try:
            await provision_all(
                self.url, self.settings_as("provisioner"), sorted(self.config.roles)
            )
            if self.services:
                with self._telemetry("knowledge"):
                    self.brokers.append(
                        await start_knowledge(
                            self.settings_as("knowledge"), self.knowledge_root(), self.url
                        )
                    )
                with self._telemetry("orchestrator"):
                    self.brokers.append(
                        await start_orchestrator(
                            self.settings_as("orchestrator"), self.config, self.url
                        )
                    )
                for role in sorted(self.config.roles):
                    with self._telemetry("agent", role):
                        self.brokers.append(
                            await start_agent(
                                self.settings_as(agent_identity_name(role)),
                                self.config,
                                role,
                                self.url,
                                replay=self.replay,
                            )
                        )
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def stop_services(self) -> None:
        """Stop the services (each finishes what it handles), leaving the server up; once."""
        for broker in reversed(self.brokers):
            with contextlib.suppress(Exception):
                await broker.stop()
        self.brokers.clear()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop services, then the server."""
        await self.stop_services()
        for made in self.telemetries:
            made.shutdown()  # export what is buffered
        self.telemetries.clear()
        if self.server is not None:
            await self.server.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


@contextlib.asynccontextmanager
async def dashboard_beside(
    settings: Settings, url: str, port: int | None
) -> AsyncIterator[DashboardServer | None]:
    """A dashboard of the bus at `url` on `port` while in the block; nothing when `port` is None."""
    if port is None:
        yield None
        return
    async with DashboardServer(settings, url, port=port) as board:
        yield board


Decider = Callable[[HiveClient], Callable[[BaseModel], Awaitable[None]]]
"""Given the client, what sees every event of the task (the approval demo's person)."""


async def run_local(
    body: dict[str, Any],
    *,
    settings: Settings,
    config: HivebusConfig,
    data_dir: Path | None,
    timeout_s: float,
    decider: Decider | None = None,
    dashboard_port: int | None = None,
    secure: bool = False,
) -> TaskFinished | TaskRejected:
    """Run one task on a local stack; with `dashboard_port`, beside a dashboard kept up after.

    With `secure`, on the shipped identities: the task is submitted (and its approvals
    decided) as `approver`.
    """
    console = stderr_console()
    async with (
        LocalStack(settings, config, data_dir=data_dir, secure=secure) as stack,
        dashboard_beside(stack.dashboard_settings(), stack.url, dashboard_port) as board,
        HiveClient(stack.url, stack.settings_as("approver")) as client,
    ):
        if board is not None:
            announce(console, board, settings)
            await board.wait_ready(30.0)
        task_id = await client.submit(body)
        console.print(f"submitted task [bold]{task_id}[/] on {stack.url}")
        if board is not None:
            console.print(f"follow it at {board.url}#/tasks/{task_id}", soft_wrap=True)
        result = await follow_to_end(
            client,
            task_id,
            console,
            timeout_s,
            nats_url=stack.url,
            on_event=decider(client) if decider is not None else None,
        )
        if board is not None:
            console.print(f"the dashboard stays up on {board.url}; Ctrl-C stops", soft_wrap=True)
            await until_signal()
        return result
