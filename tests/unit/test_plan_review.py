"""A person reviews each plan before it runs (`planning.review`): approve, reject, modify."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_approval_rules import TASK, Desk
from test_planning import GOAL, GOOD, ROLES, USED
from test_replanning import PIPELINE, REVISION

from hivebus.console.approval_view import request_lines
from hivebus.console.render import progress_line
from hivebus.contracts import (
    PLANNING_SUBTASK,
    ApprovalKind,
    ApprovalRefused,
    ApprovalRequested,
    ApprovalResolved,
    ApprovalStatus,
    Decision,
    PlanReady,
    RefusalCode,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStatus,
    TaskFinished,
    TaskStatus,
    Usage,
)
from hivebus.core import HivebusConfig, parse_config

S = SubTaskStatus


def _config(**planning: Any) -> HivebusConfig:
    return parse_config({"roles": ROLES, "planning": {"review": True, **planning}}, Path())


def _work(desk: Desk) -> list[SubTaskAssigned]:
    return [a for a in desk.sink.delivered(SubTaskAssigned) if a.subtask_id != PLANNING_SUBTASK]


def _planner_runs(desk: Desk) -> list[SubTaskAssigned]:
    return [a for a in desk.sink.delivered(SubTaskAssigned) if a.subtask_id == PLANNING_SUBTASK]


async def _answer(desk: Desk, output: Any) -> ApprovalRequested:
    """The planner's latest attempt answers `output`; the review it asks for."""
    attempt = _planner_runs(desk)[-1].attempt
    await desk.scheduler.finished(
        SubTaskFinished(
            task_id=TASK,
            subtask_id=PLANNING_SUBTASK,
            attempt=attempt,
            run_id=f"plan-run-{attempt}",
            role="planner",
            status=S.COMPLETED,
            reason="done",
            output=output,
            usage=USED,
        )
    )
    return desk.sink.of(ApprovalRequested)[-1]


async def _run_all(desk: Desk, failing: set[str] | None = None) -> None:
    """Play the agents: every dispatched sub-task runs once, in order."""
    done: set[str] = set()
    while pending := [a for a in _work(desk) if a.subtask_id not in done]:
        for assignment in pending:
            sid = assignment.subtask_id
            done.add(sid)
            status = S.FAILED if sid in (failing or set()) else S.COMPLETED
            await desk.scheduler.finished(
                SubTaskFinished(
                    task_id=TASK,
                    subtask_id=sid,
                    attempt=1,
                    run_id=f"run-{sid}",
                    role=assignment.role,
                    status=status,
                    reason="done" if status == S.COMPLETED else "it broke",
                    output=f"{sid} done" if status == S.COMPLETED else None,
                    usage=Usage(steps=1),
                )
            )


def _result(desk: Desk) -> TaskFinished:
    (result,) = desk.sink.delivered(TaskFinished)
    return result


@pytest.fixture
async def desk() -> Desk:
    """A goal-only task whose planner was asked for a plan, with plan review on."""
    desk = Desk(_config())
    await desk.scheduler.submit(GOAL, TASK)
    return desk


async def test_a_valid_plan_waits_for_approval_then_runs(desk: Desk) -> None:
    """The plan is asked as an approval of kind `plan`; nothing runs until it is approved."""
    request = await _answer(desk, GOOD)
    assert request.approval_kind is ApprovalKind.PLAN
    assert request.subtask_id == PLANNING_SUBTASK
    assert request.arguments["subtasks"][0]["id"] == "draft"
    assert request.allowed_decisions == [Decision.APPROVE, Decision.REJECT, Decision.MODIFY]
    assert _work(desk) == []
    assert desk.sink.of(PlanReady) == []
    meta = await desk.store.read_meta(TASK)
    assert meta is not None
    assert meta.status == TaskStatus.PLANNING
    await desk.pauses.requested(request)  # its own request, delivered back: nothing changes
    assert (await desk.record(request.approval_id)).status is ApprovalStatus.PENDING
    await desk.decide(request.approval_id, Decision.APPROVE, reason="looks right")
    (ready,) = desk.sink.of(PlanReady)
    assert ready.reviewed_by == "alice"
    assert [a.subtask_id for a in _work(desk)] == ["draft"]
    assert len(desk.sink.of(ApprovalResolved)) == 1
    await _run_all(desk)
    result = _result(desk)
    assert result.status == TaskStatus.COMPLETED, result.reason
    assert result.planning.reviews == ["generation 1: approve by alice"]


async def test_a_rejected_plan_fails_the_task_with_the_reason(desk: Desk) -> None:
    """Reject: the task fails, saying who rejected it and why; nothing was dispatched."""
    request = await _answer(desk, GOOD)
    await desk.decide(request.approval_id, Decision.REJECT, by="bob", reason="too costly")
    result = _result(desk)
    assert result.status == TaskStatus.FAILED
    assert result.reason == "the plan was rejected by bob: too costly"
    assert _work(desk) == []


async def test_a_modified_plan_is_checked_again_and_runs(desk: Desk) -> None:
    """Modify supplies the plan that runs instead, once it passes the planner's checks."""
    request = await _answer(desk, GOOD)
    edited = {"subtasks": [{"id": "memo", "role": "writer", "prompt": "Write it in one go."}]}
    await desk.decide(request.approval_id, Decision.MODIFY, arguments=edited)
    (ready,) = desk.sink.of(PlanReady)
    assert [s.id for s in ready.plan.subtasks] == ["memo"]
    assert [a.subtask_id for a in _work(desk)] == ["memo"]
    await _run_all(desk)
    assert _result(desk).planning.reviews == ["generation 1: modify by alice"]


@pytest.mark.parametrize(
    ("edited", "expected"),
    [
        ({"subtasks": [{"id": "a", "role": "analyst", "prompt": "p"}]}, "unknown role 'analyst'"),
        (
            {"subtasks": [{"id": "a", "role": "writer", "prompt": "p", "depends_on": ["a"]}]},
            "depends on itself",
        ),
        ({"steps": ["no"]}, "subtasks"),
    ],
    ids=["unknown-role", "cycle", "not-a-plan"],
)
async def test_an_invalid_edit_is_refused_and_the_review_still_waits(
    desk: Desk, edited: dict[str, Any], expected: str
) -> None:
    """An edited plan that fails a check is refused `invalid`, naming it; approve still works."""
    request = await _answer(desk, GOOD)
    await desk.decide(request.approval_id, Decision.MODIFY, arguments=edited)
    (refused,) = desk.sink.of(ApprovalRefused)
    assert refused.code is RefusalCode.INVALID
    assert expected in refused.why, refused.why
    assert (await desk.record(request.approval_id)).status is ApprovalStatus.PENDING
    assert _work(desk) == []
    await desk.decide(request.approval_id, Decision.APPROVE, by="carol")
    assert [a.subtask_id for a in _work(desk)] == ["draft"]


async def test_a_plan_nobody_reviews_in_time_fails_the_task(desk: Desk) -> None:
    """The review's expiry rejects the plan as hivebus; the task fails saying so."""
    request = await _answer(desk, GOOD)
    await desk.expire(request)
    result = _result(desk)
    assert result.status == TaskStatus.FAILED
    assert result.reason.startswith("nobody reviewed the plan by ")


async def test_a_cancel_while_reviewing_closes_the_review(desk: Desk) -> None:
    """Cancelled while the plan waits: the task ends, the review is closed, decisions refused."""
    request = await _answer(desk, GOOD)
    await desk.scheduler.stop(TASK, TaskStatus.CANCELLED, "cancelled by alice")
    assert _result(desk).status == TaskStatus.CANCELLED
    assert (await desk.record(request.approval_id)).status is ApprovalStatus.CLOSED
    await desk.decide(request.approval_id, Decision.APPROVE)
    (refused,) = desk.sink.of(ApprovalRefused)
    assert refused.code is RefusalCode.TASK_ENDED
    assert _work(desk) == []


async def test_a_redelivered_answer_asks_the_same_review_once(desk: Desk) -> None:
    """The planner's result again: the same approval id, one record, nothing dispatched."""
    first = await _answer(desk, GOOD)
    second = await _answer(desk, GOOD)
    assert first.approval_id == second.approval_id
    assert len(desk.sink.delivered(ApprovalRequested)) == 1
    assert _work(desk) == []


async def test_a_revision_is_reviewed_too_and_a_rejection_ends_the_task_as_it_stood() -> None:
    """With replan and review, a revision waits for a person; rejected, the task ends partial."""
    desk = Desk(_config(replan=1, review=True))
    await desk.scheduler.submit(PIPELINE, TASK)
    await _run_all(desk, failing={"analyse"})
    request = await _answer(desk, REVISION)
    assert "revision 1, after analyse, report did not complete" in request.reason
    assert [s["id"] for s in request.arguments["subtasks"]] == ["analyse2", "report2"]
    await desk.decide(request.approval_id, Decision.REJECT, reason="not worth it")
    result = _result(desk)
    assert result.status == TaskStatus.PARTIAL
    assert "not re-planned: the plan was rejected by alice: not worth it" in result.reason


async def test_an_approved_revision_runs() -> None:
    """An approved revision is adopted like one made without review."""
    desk = Desk(_config(replan=1, review=True))
    await desk.scheduler.submit(PIPELINE, TASK)
    await _run_all(desk, failing={"analyse"})
    request = await _answer(desk, REVISION)
    await desk.decide(request.approval_id, Decision.APPROVE)
    await _run_all(desk, failing={"analyse"})
    result = _result(desk)
    assert result.status == TaskStatus.COMPLETED, result.reason
    assert result.planning.reviews == ["generation 2: approve by alice"]


async def test_the_console_shows_a_plan_review_and_a_revision() -> None:
    """`approvals` names a plan review by its size; `watch` says what a revision replaces."""
    desk = Desk(_config(replan=1, review=True))
    await desk.scheduler.submit(PIPELINE, TASK)
    await _run_all(desk, failing={"analyse"})
    request = await _answer(desk, REVISION)
    shown = request_lines(request)
    assert "asks: a plan of 2 sub-tasks (plan-2)" in shown
    assert "modify" in shown
    await desk.decide(request.approval_id, Decision.APPROVE, by="dana")
    (ready,) = desk.sink.of(PlanReady)
    line = progress_line(ready)
    assert line is not None
    assert "plan 2 ready[/] (a revision)" in line
    assert "approved by dana" in line
    assert "replaces analyse, report; keeps fetch" in line
