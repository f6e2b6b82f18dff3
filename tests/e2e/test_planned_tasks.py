"""Planning from a goal on a real nats-server with the real services: the demo's planner."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from hivebus.console import demo
from hivebus.console.client import HiveClient, load_plan_file
from hivebus.console.stack import LocalStack
from hivebus.contracts import (
    PLANNING_SUBTASK,
    ApprovalKind,
    ApprovalRequested,
    Decision,
    PlanReady,
    PlanRejected,
    SubTaskAssigned,
    SubTaskStarted,
    SubTaskStatus,
    TaskFinished,
    TaskStatus,
)
from hivebus.core import Settings, load_config
from hivebus.core.yamlfile import load_yaml

pytestmark = pytest.mark.e2e

DEMO = Path(demo.__file__).parent


async def test_the_demo_goal_is_planned_corrected_once_and_completed(
    tmp_path: Path, settings: Settings
) -> None:
    """A goal alone: the planner's first plan is sent back, its correction runs to the end."""
    config = load_config(DEMO / "hivebus.yaml").model_copy(
        update={"workspace": tmp_path / "workspace"}
    )
    body = {
        **load_yaml(DEMO / "planned.yaml", what="plan", error=ValueError),
        "task_id": "planned-1",
    }
    assert "plan" not in body
    settings = settings.model_copy(update={"knowledge_dir": tmp_path / "knowledge"})
    events: list[BaseModel] = []
    async with LocalStack(settings, config) as stack, HiveClient(stack.url, settings) as client:
        await client.submit(body)
        async with asyncio.timeout(60):
            events = [event async for _, event in client.follow("planned-1")]
        status_meta, states, _ = await client.status("planned-1")
    (rejected,) = [e for e in events if isinstance(e, PlanRejected)]
    assert rejected.retrying
    assert any("unknown role 'analyst'" in e for e in rejected.errors), rejected.errors
    assert any("unknown sub-task 'summary'" in e for e in rejected.errors), rejected.errors
    ready = [e for e in events if isinstance(e, PlanReady)]
    assert len(ready) == 1
    assert ready[0].corrections == 1
    assert len(ready[0].plan.subtasks) == 5
    planner_runs = [
        e for e in events if isinstance(e, SubTaskStarted) and e.subtask_id == PLANNING_SUBTASK
    ]
    assert [e.attempt for e in planner_runs] == [1, 2]
    started = [e.subtask_id for e in events if isinstance(e, SubTaskStarted)]
    assert started.index("synthesis") > started.index(PLANNING_SUBTASK)
    result = events[-1]
    assert isinstance(result, TaskFinished)
    assert result.status == TaskStatus.COMPLETED, result.reason
    assert result.planning.source == "planned"
    assert result.planning.corrections == 1
    assert [s.status for s in result.subtasks] == [SubTaskStatus.COMPLETED] * 5
    assert result.usage.input_tokens >= 1100 + 1400  # the planner's two runs count
    assert status_meta is not None
    assert status_meta.planning.generation == 1
    assert [s.id for s in states][-1] == "review"
    assert not any(isinstance(e, SubTaskAssigned) for e in events)  # WORK, not EVENTS


async def test_a_goal_the_planner_cannot_plan_fails_with_every_error(
    tmp_path: Path, settings: Settings
) -> None:
    """A planner whose answers never pass: `failed` after the bound, nothing dispatched."""
    script = tmp_path / "planner.yaml"
    script.write_text(
        '- text: \'{"subtasks": [{"id": "a", "role": "ghost", "prompt": "p"}]}\'\n- then: repeat\n'
    )
    config = load_config(DEMO / "hivebus.yaml")
    roles = dict(config.roles)
    roles["planner"] = roles["planner"].model_copy(update={"model": f"scripted:{script}"})
    config = config.model_copy(
        update={
            "roles": roles,
            "workspace": tmp_path / "workspace",
            "planning": config.planning.model_copy(update={"retries": 1}),
        }
    )
    settings = settings.model_copy(update={"knowledge_dir": tmp_path / "knowledge"})
    async with LocalStack(settings, config) as stack, HiveClient(stack.url, settings) as client:
        await client.submit({"task_id": "unplannable", "goal": "Do the impossible."})
        async with asyncio.timeout(60):
            events = [event async for _, event in client.follow("unplannable")]
    result = events[-1]
    assert isinstance(result, TaskFinished)
    assert result.status == TaskStatus.FAILED
    assert "no valid plan after 2 planner answers" in result.reason
    assert "unknown role 'ghost'" in result.reason
    assert result.subtasks == []
    assert not any(isinstance(e, PlanReady) for e in events)
    started = {e.subtask_id for e in events if isinstance(e, SubTaskStarted)}
    assert started == {PLANNING_SUBTASK}


async def test_a_stuck_researcher_is_replanned_after_a_person_approves_the_revision(
    tmp_path: Path, settings: Settings
) -> None:
    """The demo's failure task, re-planned: a person approves the revision, the task completes.

    With `replan: 1` and `review`, the revision drops the stuck research; nothing reruns.
    """
    revision = {
        "subtasks": [
            {
                "id": "synthesis-2",
                "role": "writer",
                "prompt": "Combine the two research notes into one recommendation.",
                "depends_on": ["research-market", "research-tech"],
            },
            {
                "id": "review-2",
                "role": "reviewer",
                "prompt": "Review the recommendation.",
                "depends_on": ["synthesis-2"],
            },
        ]
    }
    script = tmp_path / "planner.yaml"
    script.write_text(
        f"- text: '{json.dumps(revision)}'\n  usage: {{input_tokens: 900, output_tokens: 200}}\n"
    )
    config = load_config(DEMO / "hivebus.yaml")
    roles = dict(config.roles)
    roles["planner"] = roles["planner"].model_copy(update={"model": f"scripted:{script}"})
    planning = config.planning.model_copy(update={"replan": 1, "review": True})
    config = config.model_copy(
        update={"roles": roles, "workspace": tmp_path / "workspace", "planning": planning}
    )
    body = load_plan_file(DEMO / "failure.yaml", "replanned-1")
    settings = settings.model_copy(update={"knowledge_dir": tmp_path / "knowledge"})
    events: list[BaseModel] = []
    async with LocalStack(settings, config) as stack, HiveClient(stack.url, settings) as client:
        await client.submit(body)
        async with asyncio.timeout(90):
            async for _, event in client.follow("replanned-1"):
                events.append(event)
                if isinstance(event, ApprovalRequested):
                    await client.decide(
                        event.approval_id, Decision.APPROVE, "erin", "drop the stuck research"
                    )
    (asked,) = [e for e in events if isinstance(e, ApprovalRequested)]
    assert asked.approval_kind is ApprovalKind.PLAN
    (ready,) = [e for e in events if isinstance(e, PlanReady)]
    assert ready.generation == 2
    assert ready.reviewed_by == "erin"
    assert ready.replaced == ["research-risks", "synthesis", "review"]
    assert ready.kept == ["research-market", "research-tech"]
    started = [e.subtask_id for e in events if isinstance(e, SubTaskStarted)]
    assert started.count("research-market") == 1  # kept, never run again
    assert started.index("synthesis-2") > started.index(PLANNING_SUBTASK)
    result = events[-1]
    assert isinstance(result, TaskFinished)
    assert result.status == TaskStatus.COMPLETED, result.reason
    assert set(result.output or {}) == {"review-2"}
    assert result.planning.revisions == 1
    assert result.planning.superseded == ["research-risks", "synthesis", "review"]
    assert result.planning.reviews == ["generation 2: approve by erin"]
