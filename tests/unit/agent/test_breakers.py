"""Breaker changes become `BreakerChanged` events for the run being served, and never raise."""

from __future__ import annotations

from pydantic import BaseModel
from structlog.testing import capture_logs

from hivebus.agent.breakers import BreakerEvents, serving
from hivebus.contracts import BreakerChanged
from hivebus.core.reliability import BreakerPolicy, BreakerRegistry

from .fakes import CollectingSink, FakeClock


class DownSink:
    """A sink whose bus is down."""

    async def publish(self, message: BaseModel) -> None:
        """Fail to publish."""
        raise ConnectionError(f"bus down, {type(message).__name__} lost")


def open_once(registry: BreakerRegistry) -> None:
    """Fail one call through the `tool:t` breaker of `registry` (threshold 1: it opens)."""
    permit = registry.get("tool:t").allow()
    assert permit is not None
    permit.failure()


async def test_a_change_is_published_for_the_run_being_served() -> None:
    """A change inside `serving` is published with that run's task and sub-task, and logged."""
    sink = CollectingSink()
    events = BreakerEvents(sink)
    registry = BreakerRegistry(BreakerPolicy(failure_threshold=1), FakeClock(), events.changed)
    with capture_logs() as logs, serving("task-7", "sub-3"):
        open_once(registry)
    await events.drain()

    [event] = sink.side
    assert isinstance(event, BreakerChanged)
    assert (event.task_id, event.subtask_id) == ("task-7", "sub-3")
    assert (event.breaker, event.old, event.new) == ("tool:t", "closed", "open")
    assert [line["event"] for line in logs] == ["breaker_changed"]


async def test_a_change_outside_any_run_is_only_logged() -> None:
    """Without a run to attribute it to, a change is logged and nothing is published."""
    sink = CollectingSink()
    events = BreakerEvents(sink)
    registry = BreakerRegistry(BreakerPolicy(failure_threshold=1), FakeClock(), events.changed)
    with capture_logs() as logs:
        open_once(registry)
    await events.drain()

    assert sink.side == []
    assert [line["event"] for line in logs] == ["breaker_changed"]


async def test_a_change_that_cannot_be_published_is_logged_and_the_breaker_still_works() -> None:
    """A publish failure is logged as `breaker_event_lost`; the breaker has moved all the same."""
    events = BreakerEvents(DownSink())
    registry = BreakerRegistry(BreakerPolicy(failure_threshold=1), FakeClock(), events.changed)
    with capture_logs() as logs:
        with serving("task-7", "sub-3"):
            open_once(registry)
        await events.drain()

    assert registry.get("tool:t").allow() is None  # open
    lost = [line for line in logs if line["event"] == "breaker_event_lost"]
    assert len(lost) == 1
    assert "bus down" in lost[0]["error"]
