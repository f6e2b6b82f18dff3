"""Stopping a task (a cancel or its deadline) keeps what its runs already did."""

from __future__ import annotations

import pytest
from test_scheduler import TASK, Hive, node, plan

from hivebus.contracts import RunCheckpoint, RunPhase, SubTaskStatus, TaskStatus, subjects
from hivebus.core import HivebusConfig
from hivebus.orchestrator import changes

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
