"""Breaker changes as events: each change is published for the run whose call caused it.

The breakers of a process are shared by all its runs, so a change is attributed through a
context variable: the service sets the run being served (`serving(...)`, in `served`) around
each run, and the registry's listener (`BreakerEvents.changed`) reads it. The listener is
called inside the breaker's own bookkeeping, so it only schedules the publish (a task kept
until it is done); a change that cannot be published is logged and never reaches the run.
With tracing on, a change is also a `breaker_changed` event on the current span (the call's
that caused it), and an opening counts in `hivebus.breaker.opens`.
"""

from __future__ import annotations

import asyncio

from hivebus.agent.served import CURRENT_RUN, ServedRun, serving
from hivebus.agent.tracing import breaker_changed
from hivebus.contracts import BreakerChanged
from hivebus.core import EventSink, get_logger
from hivebus.core.reliability import BreakerState

# `serving` is re-exported: the service and tests know it from here.
__all__ = ["CURRENT_RUN", "BreakerEvents", "ServedRun", "serving"]

log = get_logger(__name__)


class BreakerEvents:
    """A breaker registry's listener that publishes every change as `BreakerChanged`."""

    def __init__(self, sink: EventSink) -> None:
        """Publish through `sink`."""
        self.sink = sink
        self._publishing: set[asyncio.Task[None]] = set()

    def changed(self, name: str, old: BreakerState, new: BreakerState) -> None:
        """Log the change and schedule its event for the run being served; never raises."""
        log.warning("breaker_changed", breaker=name, old=old.value, new=new.value)
        breaker_changed(name, old.value, new.value)
        run = CURRENT_RUN.get()
        if run is None:  # no run to attribute it to (the event needs a task)
            return
        try:
            event = BreakerChanged(
                task_id=run.task_id,
                subtask_id=run.subtask_id,
                breaker=name,
                old=old.value,
                new=new.value,
            )
            task = asyncio.get_running_loop().create_task(self._publish(event))
        except Exception as exc:  # noqa: BLE001 - a breaker must keep working whatever happens here
            log.warning("breaker_event_lost", breaker=name, error=repr(exc))
            return
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish(self, event: BreakerChanged) -> None:
        try:
            await self.sink.publish(event)
        except Exception as exc:  # noqa: BLE001 - a lost event is logged, never raised
            log.warning("breaker_event_lost", breaker=event.breaker, error=repr(exc))

    async def drain(self) -> None:
        """Wait until every change scheduled so far is published (or logged as lost)."""
        while self._publishing:
            await asyncio.gather(*self._publishing)
