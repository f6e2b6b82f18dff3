"""Re-planning after a failure (`planning.replan`): completed work kept, revisions bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_planning import ROLES, PlanningOutbox, _answer, _planner_runs
from test_scheduler import TASK, Hive, output_of

from hivebus.contracts import (
    Plan,
    SubTaskState,
    SubTaskStatus,
    TaskStatus,
    TaskSubmitted,
)
from hivebus.core import ConfigError, HivebusConfig, parse_config
from hivebus.orchestrator.graph import Graph, GraphCache
from hivebus.orchestrator.revision import check_revision, compose

S = SubTaskStatus

PIPELINE = {
    "task_id": TASK,
    "goal": "Fetch, analyse, report.",
    "budget": {"max_tokens": 300_000},
    "plan": {
        "subtasks": [
            {"id": "fetch", "role": "writer", "prompt": "Fetch the data."},
            {"id": "analyse", "role": "writer", "prompt": "Analyse.", "depends_on": ["fetch"]},
            {"id": "report", "role": "writer", "prompt": "Report.", "depends_on": ["analyse"]},
        ]
    },
}
REVISION = {
    "subtasks": [
        {"id": "analyse2", "role": "reviewer", "prompt": "Analyse again.", "depends_on": ["fetch"]},
        {"id": "report2", "role": "writer", "prompt": "Report.", "depends_on": ["analyse2"]},
    ]
}


def _config(**planning: Any) -> HivebusConfig:
    return parse_config({"roles": ROLES, "planning": planning}, Path())


def _hive(**planning: Any) -> Hive:
    return Hive(_config(**planning), PlanningOutbox())


def _outbox(hive: Hive) -> PlanningOutbox:
    assert isinstance(hive.outbox, PlanningOutbox)
    return hive.outbox


def _ran(hive: Hive, sid: str) -> int:
    return sum(1 for ran, _ in hive.ran if ran == sid)


async def test_a_failure_is_replanned_keeping_what_completed() -> None:
    """The planner sees what completed and what failed; its sub-tasks run; fetch runs once."""
    hive = _hive(replan=1)
    await hive.submit(PIPELINE)
    await hive.run({"analyse": S.FAILED})
    assert hive.outbox.results == []  # not finished: a revision is asked for
    (ask,) = _planner_runs(hive)
    told = ask.input["revision"]
    assert [c["id"] for c in told["completed"]] == ["fetch"]
    assert told["completed"][0]["output"] == output_of("fetch")
    assert [(f["id"], f["status"]) for f in told["failed"]] == [("analyse", "failed")]
    assert [b["id"] for b in told["blocked"]] == ["report"]
    assert told["tokens_left"] == 300_000 - 2 * 120
    assert "remaining work" in ask.prompt
    meta = await hive.store.read_meta(TASK)
    assert meta is not None
    assert meta.status == TaskStatus.RUNNING
    await _answer(hive, REVISION)
    (ready,) = _outbox(hive).plans
    assert ready.generation == 2
    assert [s.id for s in ready.plan.subtasks] == ["analyse2", "report2"]
    assert ready.kept == ["fetch"]
    assert ready.replaced == ["analyse", "report"]
    (analyse2,) = [a for a in hive.outbox.dispatched if a.subtask_id == "analyse2"]
    assert [(d.subtask_id, d.output) for d in analyse2.dependencies] == [
        ("fetch", output_of("fetch"))
    ]
    await hive.run()
    result = hive.the_result()
    assert result.status == TaskStatus.COMPLETED, result.reason
    assert not result.degraded
    assert result.output == {"report2": output_of("report2")}
    assert result.planning.revisions == 1
    assert result.planning.generation == 2
    assert result.planning.superseded == ["analyse", "report"]
    statuses = {s.id: s.status for s in result.subtasks}
    assert statuses == {
        "fetch": S.COMPLETED,
        "analyse": S.FAILED,
        "report": S.BLOCKED,
        "analyse2": S.COMPLETED,
        "report2": S.COMPLETED,
    }
    assert _ran(hive, "fetch") == 1  # completed work is never run again
    assert result.usage.input_tokens == 4 * 100 + 100  # four runs and the planner's


async def test_revisions_are_bounded_by_replan() -> None:
    """With replan 1, a revision that fails too ends the task: no second revision."""
    hive = _hive(replan=1)
    await hive.submit(PIPELINE)
    await hive.run({"analyse": S.FAILED})
    await _answer(hive, REVISION)
    await hive.run({"analyse2": S.FAILED})
    assert len(_planner_runs(hive)) == 1
    result = hive.the_result()
    assert result.status == TaskStatus.PARTIAL
    assert result.planning.revisions == 1
    assert "analyse2 failed" in result.reason
    assert result.output == {"fetch": output_of("fetch")}


async def test_two_revisions_with_replan_two() -> None:
    """Each revision is a new generation; the second sees the first one's failure."""
    hive = _hive(replan=2)
    await hive.submit(PIPELINE)
    await hive.run({"analyse": S.FAILED})
    await _answer(hive, REVISION)
    await hive.run({"analyse2": S.FAILED})
    second = _planner_runs(hive)[-1]
    assert second.attempt == 2
    assert [f["id"] for f in second.input["revision"]["failed"]] == ["analyse2"]
    assert "analyse" in second.input["revision"]["used_ids"]
    third = {"subtasks": [{"id": "report3", "role": "writer", "prompt": "Report what is known."}]}
    await _answer(hive, third)
    await hive.run()
    result = hive.the_result()
    assert result.status == TaskStatus.COMPLETED, result.reason
    assert result.planning.revisions == 2
    assert result.planning.generation == 3
    assert result.planning.superseded == ["analyse", "report", "analyse2", "report2"]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            {"subtasks": [{"id": "analyse", "role": "writer", "prompt": "Again."}]},
            "'analyse' is already a sub-task of this task",
        ),
        (
            {"subtasks": [{"id": "x", "role": "writer", "prompt": "p", "depends_on": ["report"]}]},
            "'report' did not complete",
        ),
        ({"subtasks": [{"id": "x", "role": "analyst", "prompt": "p"}]}, "unknown role"),
        ("nonsense", "not JSON"),
        (
            {"subtasks": [{"id": f"w{i}", "role": "writer", "prompt": "p"} for i in range(15)]},
            "over what is left of the task budget",
        ),
    ],
    ids=["reused-id", "depends-on-failed", "unknown-role", "not-json", "over-budget"],
)
async def test_a_bad_revision_is_sent_back_with_its_errors(answer: Any, expected: str) -> None:
    """A revision is checked like a plan, plus its own rules; a correction then runs."""
    hive = _hive(replan=1)
    await hive.submit(PIPELINE)
    await hive.run({"analyse": S.FAILED})
    await _answer(hive, answer)
    first, second = _planner_runs(hive)
    assert second.attempt == first.attempt + 1
    assert any(expected in e for e in second.input["errors"]), second.input["errors"]
    assert "revision" in second.input  # still told what completed and what failed
    await _answer(hive, REVISION)
    await hive.run()
    result = hive.the_result()
    assert result.status == TaskStatus.COMPLETED, result.reason
    assert result.planning.corrections == 1


async def test_a_revision_never_made_ends_the_task_as_it_stood() -> None:
    """Every answer bad: after the retries the task ends partial, saying why, nothing more ran."""
    hive = _hive(replan=1, retries=1)
    await hive.submit(PIPELINE)
    await hive.run({"analyse": S.FAILED})
    await _answer(hive, "nonsense")
    await _answer(hive, "still nonsense")
    result = hive.the_result()
    assert result.status == TaskStatus.PARTIAL
    assert "not re-planned: no valid revised plan after 2 planner answers" in result.reason
    assert result.planning.revisions == 0
    assert result.usage.input_tokens == 2 * 100 + 2 * 100  # the planner's runs count
    assert {s.id for s in result.subtasks} == {"fetch", "analyse", "report"}


async def test_a_failed_planner_run_ends_the_task_as_it_stood() -> None:
    """The revision's planner run itself fails: the task ends with what it had."""
    hive = _hive(replan=1)
    await hive.submit(PIPELINE)
    await hive.run({"analyse": S.FAILED})
    await _answer(hive, None, S.BUDGET_EXCEEDED)
    result = hive.the_result()
    assert result.status == TaskStatus.PARTIAL
    assert "the planner's run ended budget_exceeded" in result.reason


async def test_without_replan_dependents_are_blocked_as_before() -> None:
    """Without `replan` (0, the default) no planner runs; the failure blocks its dependents."""
    hive = _hive()
    await hive.submit(PIPELINE)
    await hive.run({"analyse": S.FAILED})
    assert _planner_runs(hive) == []
    result = hive.the_result()
    assert result.status == TaskStatus.PARTIAL
    assert result.planning.revisions == 0


async def test_a_redelivered_revision_answer_dispatches_nothing_twice() -> None:
    """The planner's result delivered again after its revision was adopted changes nothing."""
    hive = _hive(replan=1)
    await hive.submit(PIPELINE)
    await hive.run({"analyse": S.FAILED})
    await _answer(hive, REVISION)
    dispatched = len(hive.outbox.dispatched)
    await _answer(hive, REVISION)  # the same attempt's result again
    assert len(hive.outbox.dispatched) == dispatched  # analyse2 is dispatched already
    assert len(_outbox(hive).plans) == 1
    await hive.run()
    assert hive.the_result().status == TaskStatus.COMPLETED
    assert _ran(hive, "analyse2") == 1


async def test_a_crash_between_storing_and_adopting_a_revision_adopts_it_once() -> None:
    """The revision stored, the meta not yet grown: the redelivered answer finishes the job."""
    hive = _hive(replan=1)
    await hive.submit(PIPELINE)
    await hive.run({"analyse": S.FAILED})
    store = hive.store
    real = store.update_meta
    crashed = False

    async def crash_once(task_id: str, change: Any) -> Any:
        nonlocal crashed
        if not crashed and _outbox(hive).plans:
            crashed = True
            raise OSError("orchestrator killed")
        return await real(task_id, change)

    store.update_meta = crash_once  # type: ignore[method-assign]
    with pytest.raises(OSError, match="killed"):
        await _answer(hive, REVISION)
    store.update_meta = real  # type: ignore[method-assign]
    hive.scheduler.graphs = GraphCache(8)  # a new process: nothing cached
    await _answer(hive, REVISION)
    meta = await store.read_meta(TASK)
    assert meta is not None
    assert meta.total == 5
    assert meta.planning.revisions == 1
    await hive.run()
    result = hive.the_result()
    assert result.status == TaskStatus.COMPLETED, result.reason
    assert [s.id for s in result.subtasks] == ["fetch", "analyse", "report", "analyse2", "report2"]


async def test_a_cancel_while_replanning_ends_the_task_and_the_answer_changes_nothing() -> None:
    """Cancelled while the planner works on a revision: the task ends cancelled at once."""
    hive = _hive(replan=1)
    await hive.submit(PIPELINE)
    await hive.run({"analyse": S.FAILED})
    await hive.scheduler.stop(TASK, TaskStatus.CANCELLED, "cancelled by alice")
    result = hive.the_result()
    assert result.status == TaskStatus.CANCELLED
    await _answer(hive, REVISION)
    assert _outbox(hive).plans == []
    assert not any(a.subtask_id == "analyse2" for a in hive.outbox.dispatched)


async def test_a_planned_task_is_replanned_too() -> None:
    """A goal-only task's plan (generation 1) is revised like a given one."""
    hive = _hive(replan=1)
    await hive.submit({k: v for k, v in PIPELINE.items() if k != "plan"})
    await _answer(hive, PIPELINE["plan"])
    await hive.run({"analyse": S.FAILED})
    await _answer(hive, REVISION)
    await hive.run()
    result = hive.the_result()
    assert result.status == TaskStatus.COMPLETED, result.reason
    assert result.planning.source == "planned"
    assert result.planning.generation == 2
    assert [p.generation for p in _outbox(hive).plans] == [1, 2]
    assert [a.attempt for a in _planner_runs(hive)] == [1, 2]


def test_replan_needs_the_planning_role() -> None:
    """A configuration that re-plans without a planner role is refused, saying so."""
    roles = {k: v for k, v in ROLES.items() if k != "planner"}
    with pytest.raises(ConfigError, match=r"planning\.replan asks the 'planner' role"):
        parse_config({"roles": roles, "planning": {"replan": 1}}, Path())


_REVISED = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["fetch", "analyse", "x", "y", "hivebus-plan", ""]),
        "role": st.sampled_from(["writer", "reviewer", "analyst", 3]),
        "prompt": st.sampled_from(["p", "", None]),
    },
    optional={
        "depends_on": st.lists(st.sampled_from(["fetch", "analyse", "report", "x", "y", "z"])),
        "limits": st.sampled_from([{"max_tokens": 10}, {"max_tokens": 10**9}]),
    },
)
_REVISIONS = (
    st.none()
    | st.text(max_size=20)
    | st.builds(lambda subs: {"subtasks": subs}, st.lists(_REVISED, max_size=5))
)


def _standing() -> tuple[TaskSubmitted, Graph, dict[str, SubTaskState]]:
    submission = TaskSubmitted.model_validate(PIPELINE)
    assert submission.plan is not None
    graph = Graph.from_plan(submission.plan)
    states = {
        "fetch": SubTaskState(id="fetch", role="writer", status=S.COMPLETED, output="data"),
        "analyse": SubTaskState(id="analyse", role="writer", status=S.FAILED),
        "report": SubTaskState(id="report", role="writer", status=S.BLOCKED),
    }
    return submission, graph, states


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_REVISIONS)
def test_any_revision_is_valid_or_rejected_with_reasons(answer: Any) -> None:
    """Whatever the planner answers for a revision: new sub-tasks that may run, or errors."""
    submission, graph, states = _standing()
    part, errors = check_revision(
        submission, graph, states, answer, left=100_000, config=_config(replan=1)
    )
    if part is None:
        assert errors
        assert all(isinstance(e, str) and e for e in errors)
        return
    assert errors == []
    ids = {s.id for s in part.subtasks}
    assert not ids & set(graph.specs)  # only new sub-tasks
    for spec in part.subtasks:
        assert set(spec.depends_on) <= ids | {"fetch"}  # completed ones, or its own
    composed = compose(submission, Plan(subtasks=list(graph.specs.values())), part)
    assert composed.plan is not None
    assert [s.id for s in composed.plan.subtasks][:3] == ["fetch", "analyse", "report"]
