"""What the dashboard holds while it runs: its client on the bus, the tasks index, the guard.

The connection is made in the background (`start`): the server answers at once, `/healthz`
says 503 until the bus is reached and the streams are read, and so does every route that
needs the bus, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.js.client import JetStreamContext

from hivebus.console.client import HiveClient
from hivebus.console.dashboard.detail import Details
from hivebus.console.dashboard.errors import ApiError
from hivebus.console.dashboard.feed import Feed
from hivebus.console.dashboard.index import TaskIndex
from hivebus.console.dashboard.security import is_loopback
from hivebus.core import Settings, get_logger, jetstream
from hivebus.core.credentials import as_user

log = get_logger(__name__)

RETRY_S = 2.0
"""Wait between tries to reach the bus and its streams."""

READY_TIMEOUT_S = 60.0
"""Longest wait for the first read of the streams before serving what was read."""

MAX_STREAMS = 64
"""Live event streams (browser tabs) served at once."""


class Dashboard:
    """The running dashboard's state (kept on `app.state.dashboard`)."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        host: str,
        *,
        keepalive_s: float = 15.0,
        decide_wait_s: float = 15.0,
    ) -> None:
        """Serve the bus at `url`; `host` is where the server listens (for the POST rule)."""
        self.settings = settings
        self.url = url
        self.host = host
        self.token = (
            settings.dashboard_token.get_secret_value() if settings.dashboard_token else None
        )
        self.decisions_allowed = self.token is not None or is_loopback(host)
        self.keepalive_s = keepalive_s
        self.decide_wait_s = decide_wait_s
        self.index = TaskIndex()
        self.ready = asyncio.Event()
        self.problem = f"connecting to the bus at {url}"
        self.streams = 0
        self._client: HiveClient | None = None
        self._decider: HiveClient | None = None
        self._decider_lock = asyncio.Lock()
        self._feed: Feed | None = None
        self._details: Details | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Connect and read the streams in the background."""
        self._task = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        client = HiveClient(self.url, self.settings)
        while True:
            try:
                await client.__aenter__()
                break
            except Exception as exc:  # noqa: BLE001 - the bus may not be up yet: retry
                self.problem = f"cannot reach the bus at {self.url} ({exc!r}); retrying"
                log.warning("dashboard_connect_failed", error=repr(exc))
                await asyncio.sleep(RETRY_S)
        self._client = client
        while True:
            feed = Feed(await jetstream(client.broker), self.index)
            try:
                await feed.start(READY_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - the streams may not exist yet: retry
                await feed.stop()
                self.problem = f"cannot read the streams at {self.url} ({exc!r}); retrying"
                log.warning("dashboard_feed_failed", error=repr(exc))
                await asyncio.sleep(RETRY_S)
                continue
            self._feed = feed
            self._details = Details(client, self.index, self.settings.trace_url)
            self.ready.set()
            log.info("dashboard_ready", tasks=len(self.index.entries))
            return

    async def stop(self) -> None:
        """Stop reading and disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._feed is not None:
            await self._feed.stop()
        for client in (self._client, self._decider):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.__aexit__(None, None, None)

    def _require(self) -> None:
        if not self.ready.is_set():
            raise ApiError(503, f"not ready: {self.problem}")

    @property
    def client(self) -> HiveClient:
        """The bus client; 503 before the bus is reached."""
        self._require()
        assert self._client is not None  # noqa: S101 - set before `ready`
        return self._client

    async def decider(self) -> HiveClient:
        """The client that publishes decisions and replays: as the approver when configured.

        The dashboard's own identity (`dashboard`) only reads; with HIVEBUS_APPROVER_USER set,
        what the page decides goes out with the approver's rights, on a connection of its own.
        """
        reader = self.client
        if self.settings.approver_user is None:
            return reader
        async with self._decider_lock:
            return await self._approver_client()

    async def _approver_client(self) -> HiveClient:
        if self._decider is None:
            approver = self.settings.approver_user or ""
            decider = HiveClient(
                self.url, as_user(self.settings, approver, self.settings.approver_password)
            )
            try:
                await decider.__aenter__()
            except Exception as exc:
                raise ApiError(503, f"cannot connect as the approver: {exc!r}") from exc
            self._decider = decider
        return self._decider

    @property
    def details(self) -> Details:
        """The TaskDetail builder; 503 before the bus is reached."""
        self._require()
        assert self._details is not None  # noqa: S101 - set before `ready`
        return self._details

    async def js(self) -> JetStreamContext:
        """The JetStream context of the client; 503 before the bus is reached."""
        return await jetstream(self.client.broker)
