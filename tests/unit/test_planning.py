"""Planning from a goal: the planner's answer checked, sent back with its errors, bounded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from test_scheduler import TASK, FakeOutbox, Hive

from hivebus.contracts import (
    PLANNING_SUBTASK,
    PlanReady,
    PlanRejected,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskStatus,
    TaskStatus,
    Usage,
)
from hivebus.core import HivebusConfig, parse_config
from hivebus.orchestrator.plan_checks import check_planned, depth, parse_answer

S = SubTaskStatus
ROLES = {
    "planner": {"system": "You plan.", "model": "scripted:planner.yaml"},
    "writer": {
        "system": "You write.",
        "model": "scripted:writer.yaml",
        "description": "Writes prose.",
        "limits": {"max_tokens": 20_000},
    },
    "reviewer": {"system": "You review.", "model": "scripted:reviewer.yaml"},
}
GOAL = {"task_id": TASK, "goal": "Write and review a memo.", "budget": {"max_tokens": 300_000}}
GOOD = {
    "subtasks": [
        {"id": "draft", "role": "writer", "prompt": "Draft the memo."},
        {"id": "check", "role": "reviewer", "prompt": "Review it.", "depends_on": ["draft"]},
    ]
}
USED = Usage(input_tokens=100, output_tokens=50, steps=1)


class PlanningOutbox(FakeOutbox):
    """Also keeps each `PlanReady` and `PlanRejected`."""

    def __init__(self) -> None:
        """Nothing published yet."""
        super().__init__()
        self.plans: list[PlanReady] = []
        self.rejected: list[PlanRejected] = []

    async def publish(self, message: BaseModel) -> None:
        """Keep a plan event; anything else as the fake bus does."""
        if isinstance(message, PlanReady):
            self.plans.append(message)
        elif isinstance(message, PlanRejected):
            self.rejected.append(message)
        else:
            await super().publish(message)


def _config(**planning: Any) -> HivebusConfig:
    return parse_config({"roles": ROLES, "planning": planning}, Path())


@pytest.fixture
def hive() -> Hive:
    """A scheduler whose configuration has a `planner` role."""
    return Hive(_config(), PlanningOutbox())


def _planner_runs(hive: Hive) -> list[SubTaskAssigned]:
    return [a for a in hive.outbox.dispatched if a.subtask_id == PLANNING_SUBTASK]


async def _answer(hive: Hive, output: Any, status: SubTaskStatus = S.COMPLETED) -> None:
    """The planner's latest attempt ends with `output`."""
    attempt = _planner_runs(hive)[-1].attempt
    await hive.finish(
        SubTaskFinished(
            task_id=TASK,
            subtask_id=PLANNING_SUBTASK,
            attempt=attempt,
            run_id=f"plan-run-{attempt}",
            role="planner",
            status=status,
            reason="done" if status == S.COMPLETED else "it failed",
            output=output,
            usage=USED,
        )
    )


async def test_a_goal_only_task_is_planned_and_runs(hive: Hive) -> None:
    """The planner is dispatched with the roles, budget and schema; its plan runs to the end."""
    await hive.submit(GOAL)
    (ask,) = _planner_runs(hive)
    assert ask.role == "planner"
    assert ask.output_schema is not None
    assert "subtasks" in ask.output_schema["properties"]
    assert [r["name"] for r in ask.input["roles"]] == ["reviewer", "writer"]  # not itself
    assert ask.input["roles"][1]["description"] == "Writes prose."
    assert ask.input["budget"]["max_tokens"] == 300_000
    assert len(hive.outbox.deadlines) == 1  # the deadline runs from acceptance
    meta = await hive.store.read_meta(TASK)
    assert meta is not None
    assert meta.status == TaskStatus.PLANNING
    await _answer(hive, json.dumps(GOOD))
    assert isinstance(hive.outbox, PlanningOutbox)
    (ready,) = hive.outbox.plans
    assert [s.id for s in ready.plan.subtasks] == ["draft", "check"]
    assert ready.corrections == 0
    await hive.run()
    result = hive.the_result()
    assert result.status == TaskStatus.COMPLETED
    assert result.planning.source == "planned"
    assert result.planning.corrections == 0
    assert result.usage.input_tokens == 100 + 2 * 100  # the planner's run counts too


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"subtasks": [{"id": "a", "role": "analyst", "prompt": "p"}]}, "unknown role 'analyst'"),
        (
            {
                "subtasks": [
                    {"id": "a", "role": "writer", "prompt": "p", "depends_on": ["b"]},
                    {"id": "b", "role": "writer", "prompt": "p", "depends_on": ["a"]},
                ]
            },
            "dependency cycle",
        ),
        (
            {"subtasks": [{"id": "a", "role": "writer", "prompt": "p", "depends_on": ["zz"]}]},
            "depends on unknown sub-task 'zz'",
        ),
        (
            {
                "subtasks": [
                    {"id": f"w{i}", "role": "writer", "prompt": "p"} for i in range(16)
                ]  # 16 x 20,000 tokens > 300,000
            },
            "add up to 320000",
        ),
        ("not json at all", "not JSON"),
        ({"steps": []}, "not a plan"),
    ],
    ids=["unknown-role", "cycle", "dangling", "over-budget", "not-json", "not-a-plan"],
)
async def test_each_kind_of_plan_error_is_sent_back_and_corrected(
    hive: Hive, answer: Any, expected: str
) -> None:
    """The next attempt gets the rejected answer and every error; a good answer then runs."""
    await hive.submit(GOAL)
    await _answer(hive, answer)
    first, second = _planner_runs(hive)
    assert second.attempt == first.attempt + 1
    assert second.input["rejected_answer"] == answer
    assert any(expected in error for error in second.input["errors"]), second.input["errors"]
    assert "not a valid plan" in second.prompt
    assert isinstance(hive.outbox, PlanningOutbox)
    (told,) = hive.outbox.rejected
    assert told.retrying
    assert told.errors == second.input["errors"]
    await _answer(hive, GOOD)
    assert isinstance(hive.outbox, PlanningOutbox)
    assert hive.outbox.plans[0].corrections == 1
    await hive.run()
    assert hive.the_result().planning.corrections == 1


async def test_too_many_subtasks_and_too_deep_are_rejected() -> None:
    """`planning.max_subtasks` and `planning.max_depth` bound a planned plan."""
    config = _config(max_subtasks=2, max_depth=2)
    hive = Hive(config, PlanningOutbox())
    await hive.submit(GOAL)
    chain = {
        "subtasks": [
            {"id": "a", "role": "reviewer", "prompt": "p"},
            {"id": "b", "role": "reviewer", "prompt": "p", "depends_on": ["a"]},
            {"id": "c", "role": "reviewer", "prompt": "p", "depends_on": ["b"]},
        ]
    }
    await _answer(hive, chain)
    errors = _planner_runs(hive)[-1].input["errors"]
    assert any("more than planning.max_subtasks (2)" in e for e in errors), errors
    assert any("3 sub-tasks, more than planning.max_depth (2)" in e for e in errors), errors


async def test_a_planner_that_never_plans_fails_the_task_after_the_bound(hive: Hive) -> None:
    """After `planning.retries` corrections the task fails with the errors; nothing runs."""
    await hive.submit(GOAL)
    for _ in range(3):  # the first answer and 2 corrections
        await _answer(hive, {"subtasks": [{"id": "a", "role": "analyst", "prompt": "p"}]})
    assert len(_planner_runs(hive)) == 3
    assert isinstance(hive.outbox, PlanningOutbox)
    assert [r.retrying for r in hive.outbox.rejected] == [True, True, False]
    result = hive.the_result()
    assert result.status == TaskStatus.FAILED
    assert "no valid plan after 3 planner answers" in result.reason
    assert "unknown role 'analyst'" in result.reason
    assert result.subtasks == []
    assert result.planning.corrections == 2
    assert result.usage.input_tokens == 3 * 100
    assert [a.subtask_id for a in hive.outbox.dispatched] == [PLANNING_SUBTASK] * 3
    meta = await hive.store.read_meta(TASK)
    assert meta is not None
    assert meta.status == TaskStatus.FAILED


async def test_a_failed_planner_run_fails_the_task(hive: Hive) -> None:
    """A planner run that does not complete ends the task `failed`, saying how it ended."""
    await hive.submit(GOAL)
    await _answer(hive, None, S.BUDGET_EXCEEDED)
    result = hive.the_result()
    assert result.status == TaskStatus.FAILED
    assert "the planner's run ended budget_exceeded" in result.reason


async def test_a_redelivered_answer_changes_nothing(hive: Hive) -> None:
    """The same result twice: one correction asked, one plan accepted, roots dispatched once."""
    await hive.submit(GOAL)
    await _answer(hive, "nope")
    first = _planner_runs(hive)[0]
    await hive.finish(
        SubTaskFinished(
            task_id=TASK,
            subtask_id=PLANNING_SUBTASK,
            attempt=first.attempt,
            run_id="plan-run-1",
            role="planner",
            status=S.COMPLETED,
            reason="done",
            output="nope",
            usage=USED,
        )
    )
    assert len(_planner_runs(hive)) == 2
    await _answer(hive, GOOD)
    await _answer(hive, GOOD)
    roots = [a for a in hive.outbox.dispatched if a.subtask_id == "draft"]
    assert len({a.attempt for a in roots}) == 1
    assert isinstance(hive.outbox, PlanningOutbox)
    assert len({p.generation for p in hive.outbox.plans}) == 1


async def test_a_cancel_while_planning_ends_the_task(hive: Hive) -> None:
    """A cancel during planning ends the task at once; the planner's late answer is ignored."""
    await hive.submit(GOAL)
    await hive.scheduler.stop(TASK, TaskStatus.CANCELLED, "stop it")
    result = hive.the_result()
    assert result.status == TaskStatus.CANCELLED
    assert "no plan was made yet" in result.reason
    assert TASK in hive.store.cancelled
    await _answer(hive, GOOD)
    assert [a.subtask_id for a in hive.outbox.dispatched] == [PLANNING_SUBTASK]


async def test_a_goal_alone_without_a_planner_role_is_rejected(hive_config: HivebusConfig) -> None:
    """No `planner` role configured: the submission is rejected, saying what to do."""
    hive = Hive(hive_config)
    await hive.submit(GOAL)
    (rejection,) = hive.outbox.rejections
    assert "no 'planner' role is configured" in rejection.errors[0]


def test_depth_counts_the_longest_chain() -> None:
    """A diamond of 4 has depth 3."""
    config = _config()
    raw = {
        "subtasks": [
            {"id": "a", "role": "writer", "prompt": "p"},
            {"id": "b", "role": "writer", "prompt": "p", "depends_on": ["a"]},
            {"id": "c", "role": "writer", "prompt": "p", "depends_on": ["a"]},
            {"id": "d", "role": "reviewer", "prompt": "p", "depends_on": ["b", "c"]},
        ]
    }
    planned, errors = check_planned(_submission(), raw, config)
    assert errors == []
    assert planned is not None
    assert planned.plan is not None
    assert depth(planned.plan) == 3


def test_a_fenced_json_answer_is_read() -> None:
    """A model that wraps its JSON in a code fence still gives a plan."""
    plan, problem = parse_answer("```json\n" + json.dumps(GOOD) + "\n```")
    assert problem is None
    assert plan == GOOD


def _submission() -> Any:
    from hivebus.contracts import TaskSubmitted  # noqa: PLC0415 - only these tests build one

    return TaskSubmitted.model_validate(GOAL)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_SUBTASK = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["a", "b", "c", "hivebus-plan", "", "bad id"]),
        "role": st.sampled_from(["writer", "reviewer", "planner", "analyst", 3]),
        "prompt": st.sampled_from(["p", "", None]),
    },
    optional={
        "depends_on": st.lists(st.sampled_from(["a", "b", "c", "z"]), max_size=3),
        "limits": st.sampled_from([{"max_tokens": 10}, {"max_tokens": 10**9}, {"x": 1}]),
        "model": st.sampled_from(["scripted:x.yaml", "anthropic:claude-haiku-1", "/etc/passwd"]),
    },
)
_ANSWERS = (
    _JSON
    | st.builds(lambda subs: {"subtasks": subs}, st.lists(_SUBTASK, max_size=5))
    | st.builds(lambda subs: json.dumps({"subtasks": subs}), st.lists(_SUBTASK, max_size=5))
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ANSWERS)
def test_any_answer_is_a_valid_plan_or_rejected_with_reasons(answer: Any) -> None:
    """Whatever the planner says: a plan that passes every check, or errors; never a crash."""
    planned, errors = check_planned(_submission(), answer, _config())
    if planned is None:
        assert errors
        assert all(isinstance(e, str) and e for e in errors)
    else:
        assert errors == []
        assert planned.plan is not None
        roles = {s.role for s in planned.plan.subtasks}
        assert roles <= {"writer", "reviewer", "planner"}
        assert all(s.id != PLANNING_SUBTASK for s in planned.plan.subtasks)
