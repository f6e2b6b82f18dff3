"""What keeps the tasks list live: two ordered consumers, on TASKS and on EVENTS.

Each reads its stream from the first message on (the index is rebuilt at every start: no
second database), then goes on with what is published. EVENTS is read filtered by the
server to the kinds that move a row (never the steps, which are most of the stream), so the
start-up read grows with the number of tasks, not with their steps. Bodies are decoded with
`json.loads` and only the fields the row uses are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from hivebus.console.dashboard.index import TaskIndex
from hivebus.contracts import subjects
from hivebus.contracts.subjects import EventKind
from hivebus.core import get_logger
from hivebus.core.artifacts import ArtifactNotFoundError, Artifacts

log = get_logger(__name__)

ROW_KINDS: tuple[EventKind, ...] = (
    EventKind.SUBTASK_STARTED,
    EventKind.SUBTASK_FINISHED,
    EventKind.APPROVAL_REQUESTED,
    EventKind.APPROVAL_RESOLVED,
    EventKind.TASK_FINISHED,
    EventKind.TASK_REJECTED,
)
"""The event kinds the tasks list reads."""

PENDING_LIMIT = 200_000
"""Messages a consumer may have delivered and not yet handled (the start-up read of a big
stream arrives faster than it is decoded)."""


class Feed:
    """Reads TASKS and EVENTS into a `TaskIndex`: `await start()`, then it stays live."""

    def __init__(self, js: JetStreamContext, index: TaskIndex) -> None:
        """Feed `index` from the streams of `js`; nothing is read before `start`."""
        self.js = js
        self.index = index
        self.ready = asyncio.Event()
        """Set once both streams were read up to where they were at `start`."""
        self._subs: list[JetStreamContext.PushSubscription] = []
        self._caught_up: dict[str, asyncio.Event] = {}

    async def start(self, ready_timeout_s: float) -> None:
        """Subscribe to both streams; wait (at most `ready_timeout_s`) until they are read.

        Submissions are read first, so a task's row exists before its events arrive.
        """
        await self._subscribe(
            subjects.TASKS_STREAM, subjects.SUBMIT, ConsumerConfig(), self._on_submission
        )
        await self._wait(subjects.TASKS_STREAM, ready_timeout_s)
        config = ConsumerConfig(filter_subjects=[subjects.events_of_kind(k) for k in ROW_KINDS])
        await self._subscribe(subjects.EVENTS_STREAM, subjects.EVENTS_ALL, config, self._on_event)
        await self._wait(subjects.EVENTS_STREAM, ready_timeout_s)
        self.ready.set()

    async def _subscribe(
        self, stream: str, subject: str, config: ConsumerConfig, handle: Any
    ) -> None:
        caught_up = self._caught_up[stream] = asyncio.Event()

        async def on(msg: Msg) -> None:
            try:
                await handle(msg)
            except Exception as exc:  # noqa: BLE001 - one unreadable message never stops the feed
                log.warning("dashboard_feed_unreadable", subject=msg.subject, error=repr(exc))
            if msg.metadata.num_pending == 0:
                caught_up.set()

        sub = await self.js.subscribe(
            subject,
            stream=stream,
            config=config,
            cb=on,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
            pending_msgs_limit=PENDING_LIMIT,
            pending_bytes_limit=-1,
        )
        self._subs.append(sub)
        info = await sub.consumer_info()
        if not info.num_pending and not (info.delivered and info.delivered.stream_seq):
            caught_up.set()  # nothing to read; otherwise `on` sets it at the last message

    async def _wait(self, stream: str, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self._caught_up[stream].wait(), timeout_s)
        except TimeoutError:
            log.warning("dashboard_feed_slow", stream=stream, waited_s=timeout_s)

    async def _on_submission(self, msg: Msg) -> None:
        body = _loads(msg.data)
        msg_id = (msg.headers or {}).get(subjects.MSG_ID_HEADER)
        self.index.add_submission(
            msg.metadata.sequence.stream, body, msg_id, msg.metadata.timestamp
        )

    async def _on_event(self, msg: Msg) -> None:
        kind = msg.subject.rsplit(".", 1)[-1]
        event = _loads(msg.data)
        if not isinstance(event, dict):
            return
        if kind == EventKind.TASK_FINISHED.value and isinstance(event.get("result_ref"), str):
            with contextlib.suppress(ArtifactNotFoundError):
                whole = _loads(await Artifacts(self.js).get(event["result_ref"]))
                if isinstance(whole, dict):
                    event = whole
        self.index.add_event(kind, event)

    async def stop(self) -> None:
        """Unsubscribe (the server removes the ordered consumers)."""
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()


def _loads(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None
