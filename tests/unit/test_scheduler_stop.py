"""Stopping a task (a cancel or its deadline) keeps what its runs already did."""

from __future__ import annotations

import pytest
from test_scheduler import TASK, Hive, node, plan

from hivebus.contracts import (
    RunCheckpoint,
    RunPhase,
    SubTaskStatus,
    TaskStatus,
    TaskSubmitted,
    subjects,
)
from hivebus.core import HivebusConfig
from hivebus.orchestrator import MemoryStore, changes

S = SubTaskStatus
PAIR = plan(node("first"), node("second", ["first"]))


@pytest.fixture
async def hive(hive_config: HivebusConfig) -> Hive:
    """`first` dispatched; its `SubTaskStarted` never reached the scheduler."""
    hive = Hive(hive_config)
    await hive.submit(PAIR)
    assert (await hive.state("first")).status == S.DISPATCHED
    return hive


def _checkpoint(hive: Hive, run: RunCheckpoint) -> None:
    hive.store.runs[subjects.checkpoint_key(TASK, "first", 1)] = run


async def test_a_result_the_run_already_decided_counts_at_the_deadline(hive: Hive) -> None:
    """The run ended while no orchestrator ran; its report waits behind the deadline."""
    done = hive.result("first")
    _checkpoint(hive, RunCheckpoint(run_id=done.run_id, phase=RunPhase.FINISHED, finished=done))
    await hive.scheduler.stop(TASK, TaskStatus.TIMEOUT, "deadline reached")
    result = hive.the_result()
    assert result.status == TaskStatus.TIMEOUT
    assert {s.id: s.status for s in result.subtasks} == {
        "first": S.COMPLETED,
        "second": S.CANCELLED,
    }
    assert result.output == {"first": "first-output"}
    assert [a.subtask_id for a in hive.outbox.dispatched] == ["first"]  # nothing new started
    await hive.finish(done)  # the waiting report, delivered after: changes nothing
    assert len(hive.outbox.results) == 1


async def test_a_run_that_began_ends_at_its_step_boundary(hive: Hive) -> None:
    """A checkpoint without a result: the run is going; its own report ends the sub-task."""
    _checkpoint(hive, RunCheckpoint(run_id="run-first-1"))
    await hive.scheduler.stop(TASK, TaskStatus.CANCELLED, "stop it")
    assert (await hive.state("first")).status == S.DISPATCHED
    assert (await hive.state("second")).status == S.CANCELLED
    assert hive.outbox.results == []
    await hive.finish(hive.result("first", S.CANCELLED))
    result = hive.the_result()
    assert result.status == TaskStatus.CANCELLED
    assert {s.id: s.status for s in result.subtasks} == {
        "first": S.CANCELLED,
        "second": S.CANCELLED,
    }


async def test_a_run_that_never_began_is_cancelled(hive: Hive) -> None:
    """No checkpoint: no agent took the work; the deadline ends it where it is."""
    await hive.scheduler.stop(TASK, TaskStatus.TIMEOUT, "deadline reached")
    result = hive.the_result()
    assert result.status == TaskStatus.TIMEOUT
    assert {s.id: s.status for s in result.subtasks} == {
        "first": S.CANCELLED,
        "second": S.CANCELLED,
    }


async def test_a_late_completion_after_a_cancel_starts_no_dependent(hive: Hive) -> None:
    """A run that finished its last step despite the cancel completes; nothing new runs."""
    _checkpoint(hive, RunCheckpoint(run_id="run-first-1"))
    await hive.scheduler.stop(TASK, TaskStatus.CANCELLED, "stop it")
    await hive.finish(hive.result("first"))
    result = hive.the_result()
    assert {s.id: s.status for s in result.subtasks} == {
        "first": S.COMPLETED,
        "second": S.CANCELLED,
    }
    assert [a.subtask_id for a in hive.outbox.dispatched] == ["first"]


async def test_dependents_of_a_run_the_cancel_stopped_end_cancelled_not_blocked(
    hive: Hive,
) -> None:
    """The cancelled run reports before `stop` reaches its dependents: they end cancelled.

    `stop` marks the task ending first and only then walks its sub-tasks, so the run it
    stopped may report in between; that run did not fail, so nothing it gates is `blocked`.
    """
    await hive.store.update_meta(TASK, changes.mark_ending(TaskStatus.CANCELLED, "stop it"))
    await hive.finish(hive.result("first", S.CANCELLED))
    second = await hive.state("second")
    assert second.status == S.CANCELLED
    assert second.reason == "stop it"
    await hive.scheduler.stop(TASK, TaskStatus.CANCELLED, "stop it")  # reaches them after
    result = hive.the_result()
    assert result.status == TaskStatus.CANCELLED
    assert {s.id: s.status for s in result.subtasks} == {
        "first": S.CANCELLED,
        "second": S.CANCELLED,
    }


async def test_a_failure_before_any_cancel_still_blocks_its_dependents(hive: Hive) -> None:
    """Without a stop under way, a failed run blocks what depends on it, naming it."""
    await hive.finish(hive.result("first", S.FAILED))
    second = await hive.state("second")
    assert second.status == S.BLOCKED
    assert second.blocked_by == "first"


class PlanCountingStore(MemoryStore):
    """A `MemoryStore` that counts reads of a task's plan."""

    def __init__(self) -> None:
        """Start empty, with no plan read."""
        super().__init__()
        self.plan_reads = 0

    async def load_plan(self, task_id: str) -> TaskSubmitted | None:
        """Count, then read."""
        self.plan_reads += 1
        return await super().load_plan(task_id)


@pytest.mark.parametrize("ending", [TaskStatus.TIMEOUT, TaskStatus.CANCELLED])
async def test_the_deadline_of_a_finished_task_reads_only_its_meta(
    hive_config: HivebusConfig, ending: TaskStatus
) -> None:
    """Every task's deadline comes due, finished or not: an ended task is left as it ended.

    Its plan is not read again, so its graph does not come back into the cache (where a
    large one would push out the graphs of running tasks), and nothing is published.
    """
    hive = Hive(hive_config)
    store = hive.store = hive.scheduler.store = PlanCountingStore()
    await hive.submit(PAIR)
    await hive.run()
    assert hive.the_result().status == TaskStatus.COMPLETED
    assert hive.scheduler.graphs.get(TASK) is None  # dropped when the task closed
    meta = await store.read_meta(TASK)
    reads, writes = store.plan_reads, store.writes
    await hive.scheduler.stop(TASK, ending, "deadline reached")
    assert store.plan_reads == reads
    assert store.writes == writes
    assert hive.scheduler.graphs.get(TASK) is None
    assert await store.read_meta(TASK) == meta
    assert hive.the_result().status == TaskStatus.COMPLETED  # still the one result
