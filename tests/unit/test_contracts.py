"""The contracts: events survive JSON, exported schemas match the models, ids are subject-safe."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hivebus.contracts import (
    EVENT_MODELS,
    SCHEMA_VERSION,
    ApprovalDecided,
    ApprovalExpired,
    ApprovalKind,
    ApprovalRefused,
    ApprovalRequested,
    ApprovalResolved,
    BreakerChanged,
    BudgetWarning,
    CancelRequested,
    DeadLetter,
    DeadlineReached,
    Decision,
    DependencyOutput,
    Event,
    Limits,
    NoteCommitted,
    Plan,
    PlanReady,
    PlanRejected,
    RefusalCode,
    RetryRecord,
    StepRecorded,
    SubTaskAssigned,
    SubTaskFinished,
    SubTaskSpec,
    SubTaskStarted,
    SubTaskStatus,
    SubTaskSummary,
    TaskBudget,
    TaskFinished,
    TaskRejected,
    TaskStatus,
    TaskSubmitted,
    Tier,
    Usage,
    approval_id,
    is_identifier,
    json_schemas,
    subjects,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "contracts" / "schemas"
EXPORT_COMMAND = ".venv/bin/hivebus schemas contracts/schemas"
TS = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
USAGE = Usage(
    input_tokens=120,
    output_tokens=34,
    cost_usd=0.0123,
    steps=3,
    tool_calls=1,
    wall_s=2.5,
    retries=2,
)
LIMITS = Limits(max_steps=7, max_tokens=5_000, max_wall_s=30.5, max_tool_calls=2)


def _samples() -> list[Event]:
    """One instance of every event model, with every optional field set to a non-default."""
    common: dict[str, Any] = {"task_id": "task-1", "ts": TS, "event_id": "e" * 32}
    plan = Plan(
        subtasks=[
            SubTaskSpec(
                id="draft", role="writer", prompt="Draft it.", input={"n": [1, 2.5]}, kind="prose"
            ),
            SubTaskSpec(
                id="review",
                role="reviewer",
                prompt="Review it.",
                depends_on=["draft"],
                limits=LIMITS,
                model="anthropic:claude-haiku-4",
                output_schema={"type": "object", "required": ["ok"]},
            ),
        ]
    )
    return [
        TaskSubmitted(
            **common,
            goal="Write a note.",
            plan=plan,
            budget=TaskBudget(max_tokens=9_000, max_cost_usd=1.25, deadline_s=600),
        ),
        TaskRejected(**common, errors=["plan: missing", "budget.max_tokens: too small"]),
        SubTaskAssigned(
            **common,
            subtask_id="review",
            attempt=2,
            role="reviewer",
            goal="Write a note.",
            prompt="Review it.",
            input={"strict": True},
            limits=LIMITS,
            model="anthropic:claude-haiku-4",
            output_schema={"type": "object"},
            subtask_kind="review",
            budget=TaskBudget(max_tokens=9_000, max_cost_usd=1.25, deadline_s=600),
            dependencies=[DependencyOutput(subtask_id="draft", output={"text": "hi", "n": None})],
        ),
        SubTaskStarted(
            **common,
            subtask_id="draft",
            attempt=1,
            run_id="run-1",
            role="writer",
            model="scripted:w",
        ),
        StepRecorded(
            **common,
            subtask_id="draft",
            attempt=1,
            run_id="run-1",
            step=2,
            step_kind="tool",
            name="kb_read",
            input={"path": "notes/a.md"},
            output=["line", 1, 2.0, None, True],
            error="transient: try again",
            usage=USAGE,
            retries=[
                RetryRecord(target="kb_read", attempt=1, error="connection refused", delay_s=0.5)
            ],
            notes=["breaker tool:kb_read: closed -> open"],
        ),
        SubTaskFinished(
            **common,
            subtask_id="draft",
            attempt=1,
            run_id="run-1",
            role="writer",
            status=SubTaskStatus.BUDGET_EXCEEDED,
            reason="max_tokens reached",
            output={"partial": "hal"},
            usage=USAGE,
            limit="max_tokens",
            flags=["contact: replaced phone number not found in any source: 555-010-0199"],
        ),
        TaskFinished(
            **common,
            status=TaskStatus.PARTIAL,
            reason="1 of 2 sub-tasks completed",
            degraded=True,
            output={"draft": "text"},
            usage=USAGE,
            subtasks=[
                SubTaskSummary(id="draft", role="writer", status=SubTaskStatus.COMPLETED),
                SubTaskSummary(
                    id="review",
                    role="reviewer",
                    status=SubTaskStatus.BLOCKED,
                    reason="dependency failed",
                    blocked_by="draft",
                    usage=USAGE,
                    output={"x": 1},
                    flags=["secret: redacted a GitHub token"],
                ),
            ],
        ),
        PlanReady(
            **common,
            generation=1,
            corrections=1,
            plan=Plan.model_validate(
                {"subtasks": [{"id": "draft", "role": "writer", "prompt": "Write it."}]}
            ),
        ),
        PlanRejected(**common, attempt=1, errors=["unknown role 'analyst'"], retrying=True),
        BudgetWarning(
            **common, used_tokens=7_300, max_tokens=9_000, used_cost_usd=0.5, max_cost_usd=1.25
        ),
        BreakerChanged(
            **common,
            subtask_id="draft",
            breaker="model:anthropic:claude-haiku-4",
            old="closed",
            new="open",
        ),
        CancelRequested(**common, reason="the user changed their mind"),
        DeadlineReached(**common, deadline=datetime(2026, 11, 22, 12, 0, tzinfo=UTC)),
        DeadLetter(
            **common,
            subtask_id="draft",
            attempt=2,
            why="max_deliveries",
            deliveries=5,
            original={"kind": "subtask_assigned"},
            checkpoint={"run_id": "r1", "usage": {"steps": 3}},
            usage=Usage(steps=3, input_tokens=100),
            errors=["delivered 5 times without a result (max_deliver)"],
        ),
        NoteCommitted(
            **common,
            subtask_id="draft",
            path="tasks/t-1/draft.md",
            revision="0f3c2a",
            commit="9be1d0",
            author="writer/run-1",
        ),
        *_approval_samples(common),
    ]


def _approval_samples(common: dict[str, Any]) -> list[Event]:
    """One of each approval event, for a call that sends an email."""
    when = datetime(2026, 1, 1, 13, 0, tzinfo=UTC)
    ap = approval_id("t-1", "send", 1, 2, "call-1")
    return [
        ApprovalRequested(
            **common,
            approval_id=ap,
            subtask_id="send",
            attempt=1,
            run_id="r1",
            role="mailer",
            step=2,
            call_id="call-1",
            approval_kind=ApprovalKind.TOOL_CALL,
            tool="send_email",
            tier=Tier.WRITE_RISKY,
            arguments={"to": "a@example.com", "subject": "hi"},
            args_schema={"type": "object"},
            reason="the customer asked for a reply",
            allowed_decisions=[Decision.APPROVE, Decision.REJECT, Decision.MODIFY],
            expires_at=when,
            pause=[ap],
        ),
        ApprovalDecided(
            **common,
            approval_id=ap,
            decision=Decision.MODIFY,
            by="alice",
            reason="wrong address",
            arguments={"to": "b@example.com", "subject": "hi"},
        ),
        ApprovalResolved(
            **common,
            approval_id=ap,
            subtask_id="send",
            attempt=1,
            decision=Decision.MODIFY,
            by="alice",
            arguments={"to": "b@example.com", "subject": "hi"},
            decision_event_id="e-1",
            decided_at=when,
            expires_at=when,
        ),
        ApprovalRefused(
            **common,
            approval_id=ap,
            decision=Decision.APPROVE,
            by="bob",
            code=RefusalCode.ALREADY_DECIDED,
            why="already resolved: modify by alice",
            decision_event_id="e-2",
        ),
        ApprovalExpired(**common, approval_id=ap, subtask_id="send", expires_at=when),
    ]


SAMPLES = _samples()


def test_samples_cover_every_event_model() -> None:
    """The round-trip samples include exactly one instance of each model in EVENT_MODELS."""
    assert [type(sample) for sample in SAMPLES] == list(EVENT_MODELS)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda event: type(event).__name__)
def test_event_round_trips_through_json(event: Event) -> None:
    """Every event model decodes its own JSON back to an equal event with an equal dump."""
    text = event.model_dump_json()
    decoded = type(event).model_validate_json(text)
    assert decoded == event
    assert decoded.model_dump_json() == text


@pytest.mark.parametrize("model", EVENT_MODELS, ids=lambda model: model.__name__)
def test_event_defaults_round_trip(model: type[Event]) -> None:
    """An event built with only its required fields carries a kind and version and round-trips."""
    sample = next(s for s in SAMPLES if type(s) is model)
    required = {
        name: getattr(sample, name)
        for name, field in model.model_fields.items()
        if field.is_required()
    }
    event = model(**required)
    data = json.loads(event.model_dump_json())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["kind"] == model.model_fields["kind"].default
    assert model.model_validate_json(event.model_dump_json()) == event


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(output=json_values)
def test_any_json_output_round_trips(output: Any) -> None:
    """A `SubTaskFinished` carrying any JSON value as output decodes back unchanged."""
    event = SubTaskFinished(
        task_id="t",
        subtask_id="s",
        attempt=1,
        run_id="r",
        role="writer",
        status=SubTaskStatus.COMPLETED,
        reason="done",
        output=output,
        usage=USAGE,
    )
    assert SubTaskFinished.model_validate_json(event.model_dump_json()) == event


def test_infinite_budget_round_trips_or_is_rejected() -> None:
    """A submission whose JSON holds `Infinity` is either rejected or decodes back after a dump."""
    text = (
        '{"task_id": "t1", "goal": "g", "budget": {"deadline_s": Infinity},'
        ' "plan": {"subtasks": [{"id": "a", "role": "writer", "prompt": "p"}]}}'
    )
    try:
        submitted = TaskSubmitted.model_validate_json(text)
    except ValidationError:
        return
    assert TaskSubmitted.model_validate_json(submitted.model_dump_json()) == submitted


def test_exported_schemas_match_the_models() -> None:
    """The JSON Schemas kept in contracts/schemas are exactly what the models export today."""
    expected = json_schemas()
    hint = f"contracts/schemas is out of date: run `{EXPORT_COMMAND}` and commit the result"
    assert SCHEMA_DIR.is_dir(), hint
    on_disk = {path.name: json.loads(path.read_text("utf-8")) for path in SCHEMA_DIR.glob("*.json")}
    assert sorted(on_disk) == sorted(expected), hint
    for name, schema in expected.items():
        assert on_disk[name] == schema, f"{name} differs from the model; {hint}"


def test_schemas_cover_every_event_and_the_plan() -> None:
    """`json_schemas()` names one file per event model plus the plan."""
    names = {f"{model.__name__}.json" for model in (*EVENT_MODELS, Plan)}
    assert set(json_schemas()) == names


GOOD_IDS = ["a", "Z", "0", "task-1", "sub_task_2", "A1-b_C", "a" * 64]
BAD_IDS = [
    "",
    "a.b",
    "a b",
    " a",
    "a ",
    "*",
    "a*",
    ">",
    "a>",
    "hive.events.>",
    "-a",
    "_a",
    "a/b",
    "a:b",
    "a\n",
    "a\tb",
    "\u00e9t\u00e9",
    "a" * 65,
]


@pytest.mark.parametrize("value", GOOD_IDS)
def test_ids_accept_subject_safe_values(value: str) -> None:
    """Letters, digits, `_` and `-` (not leading), up to 64 characters, are valid ids."""
    assert is_identifier(value)
    assert TaskRejected(task_id=value, errors=["x"]).task_id == value
    assert SubTaskSpec(id=value, role="writer", prompt="p").id == value


@pytest.mark.parametrize("value", BAD_IDS, ids=repr)
def test_ids_reject_subject_unsafe_values(value: str) -> None:
    """Dots, spaces, wildcards and other subject-unsafe ids fail both checks."""
    assert not is_identifier(value)
    with pytest.raises(ValidationError):
        TaskRejected(task_id=value, errors=["x"])
    with pytest.raises(ValidationError):
        SubTaskSpec(id=value, role="writer", prompt="p")
    with pytest.raises(ValidationError):
        SubTaskSpec(id="ok", role="writer", prompt="p", depends_on=[value])


@pytest.mark.parametrize("value", ["Writer", "1writer", "w.x", "w x", "w*", "w>", "", "w" * 33])
def test_role_names_reject_unsafe_values(value: str) -> None:
    """Role names are lower case and subject-safe; anything else is refused."""
    with pytest.raises(ValidationError):
        SubTaskSpec(id="a", role=value, prompt="p")


def test_subjects_put_a_valid_id_in_exactly_one_token() -> None:
    """Subjects and message ids built from valid ids keep each id as one token."""
    assert subjects.event("task-1", subjects.EventKind.TASK_FINISHED).split(".") == [
        "hive",
        "events",
        "task-1",
        "task_finished",
    ]
    assert subjects.work("writer") == "hive.work.writer"
    assert subjects.msg_id("task-1", "draft", 2, "dispatch") == "task-1:draft:2:dispatch"


def test_usage_plus_adds_every_field() -> None:
    """`Usage.plus` sums every counter and leaves both operands unchanged."""
    a = Usage(
        input_tokens=1, output_tokens=2, cost_usd=0.1, steps=3, tool_calls=4, wall_s=0.5, retries=5
    )
    b = Usage(
        input_tokens=10,
        output_tokens=20,
        cost_usd=0.2,
        steps=30,
        tool_calls=40,
        wall_s=1.25,
        retries=50,
    )
    total = a.plus(b)
    assert total == Usage(
        input_tokens=11,
        output_tokens=22,
        cost_usd=0.3,
        steps=33,
        tool_calls=44,
        wall_s=1.75,
        retries=55,
    )
    assert total.tokens == 33
    assert a == Usage(
        input_tokens=1, output_tokens=2, cost_usd=0.1, steps=3, tool_calls=4, wall_s=0.5, retries=5
    )
    assert b.plus(Usage()) == b


usages = st.builds(
    Usage,
    input_tokens=st.integers(0, 10**9),
    output_tokens=st.integers(0, 10**9),
    cost_usd=st.floats(0, 1000, allow_nan=False),
    steps=st.integers(0, 10**6),
    tool_calls=st.integers(0, 10**6),
    wall_s=st.floats(0, 10**5, allow_nan=False),
    retries=st.integers(0, 10**6),
)


@settings(max_examples=60, deadline=None)
@given(a=usages, b=usages)
def test_usage_plus_is_commutative_and_exact_on_counts(a: Usage, b: Usage) -> None:
    """Integer counters add exactly and the sum does not depend on the order of operands."""
    total = a.plus(b)
    assert total == b.plus(a)
    assert total.tokens == a.tokens + b.tokens
    assert total.steps == a.steps + b.steps
    assert total.tool_calls == a.tool_calls + b.tool_calls
    assert total.retries == a.retries + b.retries
    assert total.cost_usd == pytest.approx(a.cost_usd + b.cost_usd, abs=1e-6)
    assert total.wall_s == pytest.approx(a.wall_s + b.wall_s, abs=1e-3)
