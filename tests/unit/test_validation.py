"""Plan validation: every structural and semantic error is found at once, and it never crashes."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hivebus.contracts import Limits, TaskBudget, TaskSubmitted, is_identifier
from hivebus.core import HivebusConfig, parse_config
from hivebus.orchestrator import find_cycle, validate_submission


def node(sid: Any, role: Any = "writer", deps: Iterable[Any] = (), **fields: Any) -> dict[str, Any]:
    """A raw sub-task dict."""
    return {"id": sid, "role": role, "prompt": f"do {sid}", "depends_on": list(deps), **fields}


def submission(*subtasks: Any, **fields: Any) -> dict[str, Any]:
    """A raw submission dict around these raw sub-tasks."""
    return {"task_id": "t1", "goal": "Ship it.", "plan": {"subtasks": list(subtasks)}, **fields}


def rejected(raw: Any, config: HivebusConfig) -> list[str]:
    """Validate `raw`, assert it was rejected, and return the errors."""
    result, errors = validate_submission(raw, config)
    assert result is None
    assert errors
    assert all(isinstance(error, str) and error for error in errors)
    return errors


def one_error(raw: Any, config: HivebusConfig, pattern: str) -> str:
    """Validate `raw`, assert exactly one error matches `pattern`, and return it."""
    errors = rejected(raw, config)
    matching = [error for error in errors if re.search(pattern, error)]
    assert len(matching) == 1, errors
    return matching[0]


def test_valid_plan_passes(hive_config: HivebusConfig) -> None:
    """A diamond of known roles within budget is accepted as a `TaskSubmitted`, with no errors."""
    raw = submission(
        node("a"),
        node("b", deps=["a"], model="anthropic:claude-haiku-4"),
        node("c", role="reviewer", deps=["a"], limits={"max_tokens": 500, "max_wall_s": 10}),
        node("d", deps=["b", "c"]),
        budget={"max_tokens": 300_000, "deadline_s": 900},
    )
    result, errors = validate_submission(raw, hive_config)
    assert errors == []
    assert isinstance(result, TaskSubmitted)
    assert result.plan is not None
    assert [spec.id for spec in result.plan.subtasks] == ["a", "b", "c", "d"]
    assert result.plan.subtasks[3].depends_on == ["b", "c"]


def test_cycle_is_reported_with_its_path(hive_config: HivebusConfig) -> None:
    """A dependency cycle is rejected and the error spells out the cycle as `x -> y -> x`."""
    raw = submission(node("a", deps=["c"]), node("b", deps=["a"]), node("c", deps=["b"]), node("d"))
    error = one_error(raw, hive_config, "cycle")
    path = error.split(": ", 1)[1].split(" -> ")
    assert path[0] == path[-1]
    assert set(path) == {"a", "b", "c"}
    deps = {"a": ["c"], "b": ["a"], "c": ["b"]}
    for here, there in itertools.pairwise(path):
        assert there in deps[here], f"{here} -> {there} is not an edge of the plan"


def test_self_dependency_is_reported(hive_config: HivebusConfig) -> None:
    """A sub-task that depends on itself is named in the error."""
    error = one_error(submission(node("a", deps=["a"])), hive_config, "itself")
    assert "'a'" in error


def test_unknown_dependency_is_reported(hive_config: HivebusConfig) -> None:
    """A dependency on an id that is not in the plan names both the sub-task and the id."""
    error = one_error(submission(node("a"), node("b", deps=["ghost"])), hive_config, "unknown sub")
    assert "'b'" in error
    assert "'ghost'" in error


def test_duplicate_id_is_reported(hive_config: HivebusConfig) -> None:
    """Two sub-tasks with the same id are rejected, naming the position and the id."""
    error = one_error(submission(node("a"), node("b"), node("a")), hive_config, "duplicate")
    assert "plan.subtasks.2" in error
    assert "'a'" in error


def test_unknown_role_is_reported_with_known_roles(hive_config: HivebusConfig) -> None:
    """An unknown role names the sub-task, the role and the roles that do exist."""
    error = one_error(submission(node("a", role="poet")), hive_config, "unknown role")
    assert "plan.subtasks.0 (a)" in error
    assert "'poet'" in error
    assert "reviewer" in error
    assert "writer" in error


def test_model_outside_allow_models_is_reported(hive_config: HivebusConfig) -> None:
    """A model the role's `allow_models` does not match is rejected, naming role and model."""
    error = one_error(
        submission(node("a", model="anthropic:claude-opus-4")), hive_config, "does not allow"
    )
    assert "plan.subtasks.0 (a)" in error
    assert "'anthropic:claude-opus-4'" in error
    assert "claude-haiku-*" in error


def test_model_with_empty_allow_models_is_reported(hive_config: HivebusConfig) -> None:
    """A role without `allow_models` refuses any model chosen by the plan."""
    error = one_error(
        submission(node("a", role="reviewer", model="scripted:x.yaml")), hive_config, "allow"
    )
    assert "(a)" in error
    assert "none" in error


def test_subtask_tokens_above_budget_are_reported(hive_config: HivebusConfig) -> None:
    """A sub-task whose `limits.max_tokens` exceeds the task budget names both numbers."""
    raw = submission(
        node("a", limits={"max_tokens": 1_000}),
        node("big", limits={"max_tokens": 5_000}),
        budget={"max_tokens": 4_000},
    )
    error = one_error(raw, hive_config, "max_tokens")
    assert "plan.subtasks.1 (big)" in error
    assert "5000" in error
    assert "4000" in error


def test_role_default_limits_count_against_budget(hive_config: HivebusConfig) -> None:
    """Without its own limits, a sub-task's role defaults are checked against the budget."""
    raw = submission(node("a", role="reviewer"), budget={"max_tokens": 9_999, "deadline_s": 30})
    errors = rejected(raw, hive_config)
    assert any("(a)" in e and "max_tokens 10000" in e for e in errors), errors
    assert any("(a)" in e and "max_wall_s 60" in e for e in errors), errors


def test_wall_time_above_deadline_is_reported(hive_config: HivebusConfig) -> None:
    """A sub-task whose `limits.max_wall_s` exceeds the task's deadline names both numbers."""
    raw = submission(node("slow", limits={"max_wall_s": 120}), budget={"deadline_s": 100})
    error = one_error(raw, hive_config, "max_wall_s")
    assert "plan.subtasks.0 (slow)" in error
    assert "120" in error
    assert "deadline_s 100" in error


def test_limits_equal_to_budget_pass(hive_config: HivebusConfig) -> None:
    """Limits exactly equal to the task budget are within it."""
    raw = submission(
        node("a", limits={"max_tokens": 4_000, "max_wall_s": 100}),
        budget={"max_tokens": 4_000, "deadline_s": 100},
    )
    assert validate_submission(raw, hive_config)[1] == []


def test_missing_plan_is_reported(hive_config: HivebusConfig) -> None:
    """A submission without a plan is rejected with a message saying to submit one."""
    raw = {"task_id": "t1", "goal": "g"}
    assert "plan: missing" in one_error(raw, hive_config, "^plan")


@pytest.mark.parametrize("raw", [None, [], ["task"], "task", 3, 2.5, True])
def test_non_dict_submission_is_rejected(raw: Any, hive_config: HivebusConfig) -> None:
    """Anything other than a JSON object gives exactly one error saying so."""
    assert validate_submission(raw, hive_config) == (None, ["submission: must be a JSON object"])


@pytest.mark.parametrize(
    ("field", "value", "location"),
    [
        ("prompt", 5, "plan.subtasks.0.prompt"),
        ("prompt", "", "plan.subtasks.0.prompt"),
        ("depends_on", "a", "plan.subtasks.0.depends_on"),
        ("depends_on", [7], "plan.subtasks.0.depends_on.0"),
        ("limits", {"max_steps": "many"}, "plan.subtasks.0.limits.max_steps"),
        ("limits", {"max_wall_s": -1}, "plan.subtasks.0.limits.max_wall_s"),
        ("limits", [1], "plan.subtasks.0.limits"),
        ("input", "text", "plan.subtasks.0.input"),
        ("id", 7, "plan.subtasks.0.id"),
        ("id", "a.b", "plan.subtasks.0.id"),
        ("role", None, "plan.subtasks.0.role"),
        ("surprise", 1, "plan.subtasks.0.surprise"),
    ],
)
def test_bad_field_type_names_its_location(
    field: str, value: Any, location: str, hive_config: HivebusConfig
) -> None:
    """A wrongly typed sub-task field is rejected with an error located at that field."""
    raw = submission({**node("a"), field: value})
    errors = rejected(raw, hive_config)
    assert any(error.startswith(f"{location}: ") for error in errors), errors


@pytest.mark.parametrize(
    ("raw", "location"),
    [
        ({"task_id": "t.1", "goal": "g", "plan": {"subtasks": [node("a")]}}, "task_id"),
        ({"task_id": "t1", "goal": "", "plan": {"subtasks": [node("a")]}}, "goal"),
        ({"task_id": "t1", "goal": "g", "plan": {"subtasks": []}}, "plan.subtasks"),
        ({"task_id": "t1", "goal": "g", "plan": {"subtasks": "a"}}, "plan.subtasks"),
        ({"task_id": "t1", "goal": "g", "plan": "a"}, "plan"),
        ({"task_id": "t1", "goal": "g", "plan": {"subtasks": [3]}}, "plan.subtasks.0"),
        (submission(node("a"), budget={"max_tokens": 0}), "budget.max_tokens"),
        (submission(node("a"), budget="lots"), "budget"),
    ],
)
def test_bad_submission_fields_are_located(
    raw: dict[str, Any], location: str, hive_config: HivebusConfig
) -> None:
    """Bad top-level fields are rejected with an error at their location."""
    errors = rejected(raw, hive_config)
    assert any(error.startswith(f"{location}: ") for error in errors), errors


def test_every_error_is_reported_at_once(hive_config: HivebusConfig) -> None:
    """One plan with many problems gets one error for each, in a single answer."""
    raw = submission(
        node("a", deps=["c"]),
        node("b", deps=["a"]),
        node("c", deps=["b"]),
        node("a"),
        node("me", deps=["me"]),
        node("lost", deps=["nowhere"]),
        node("poet", role="poet"),
        node("fancy", model="anthropic:claude-opus-4"),
        node("greedy", limits={"max_tokens": 300_000, "max_wall_s": 500}),
        {**node("typo"), "prompt": 5},
        budget={"max_tokens": 250_000, "deadline_s": 400},
    )
    errors = rejected(raw, hive_config)
    expected = [
        "cycle",
        "duplicate sub-task id 'a'",
        "'me' depends on itself",
        "'lost' depends on unknown sub-task 'nowhere'",
        "unknown role 'poet'",
        "(fancy): role 'writer' does not allow model",
        "(greedy): limits.max_tokens 300000",
        "(greedy): limits.max_wall_s 500",
        "plan.subtasks.9.prompt",
    ]
    for fragment in expected:
        assert sum(fragment in error for error in errors) == 1, (fragment, errors)
    assert len(errors) == len(expected)


def test_repeated_dependency_is_rejected_or_harmless(hive_config: HivebusConfig) -> None:
    """A sub-task that lists the same dependency twice is rejected rather than accepted."""
    raw = submission(node("a"), node("b", deps=["a", "a"]))
    errors = rejected(raw, hive_config)
    assert any("'b'" in error for error in errors)


def test_cycle_in_a_tuple_of_subtasks_is_rejected(hive_config: HivebusConfig) -> None:
    """A cyclic plan is rejected whatever sequence type holds its sub-tasks."""
    raw = {
        "task_id": "t1",
        "goal": "g",
        "plan": {"subtasks": (node("a", deps=["b"]), node("b", deps=["a"]))},
    }
    assert validate_submission(raw, hive_config)[0] is None


def test_non_finite_budget_is_rejected_or_survives_storage(hive_config: HivebusConfig) -> None:
    """A submission holding `Infinity` is rejected, or what is accepted can be stored and read."""
    raw = json.loads(
        '{"task_id": "t1", "goal": "g", "budget": {"deadline_s": Infinity},'
        ' "plan": {"subtasks": [{"id": "a", "role": "writer", "prompt": "p"}]}}'
    )
    result, _ = validate_submission(raw, hive_config)
    if result is None:
        return
    try:
        again: TaskSubmitted | None = TaskSubmitted.model_validate_json(result.model_dump_json())
    except ValidationError:
        again = None
    assert again == result, "accepted, but its stored JSON cannot be read back"


# -- property tests ------------------------------------------------------------------------

ROLE_CHOICES = ["writer", "reviewer", "poet"]
MODEL_CHOICES = ["anthropic:claude-haiku-4", "anthropic:claude-opus-4", "scripted:x"]
FIELDS = ["id", "role", "prompt", "depends_on", "limits", "model", "input", "output_schema"]

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=6),
    st.lists(st.one_of(st.integers(), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def rarely(draw: st.DrawFn) -> bool:
    """True about one time in eight, so most generated plans are valid and some are not."""
    return draw(st.integers(0, 7)) == 0


@st.composite
def typed_submissions(draw: st.DrawFn) -> dict[str, Any]:
    """Well-typed submissions with random roles, models, limits, budgets and edges.

    Edges mostly point to earlier sub-tasks (a DAG), sometimes anywhere: cycles, self-loops,
    and one id that is never defined (a dangling reference). Sometimes an id repeats.
    """
    n = draw(st.integers(1, 8))
    pool = [f"s{i}" for i in range(n + 1)]
    nodes = []
    for i in range(n):
        targets = pool if rarely(draw) else pool[:i]
        deps = draw(st.lists(st.sampled_from(targets), max_size=2, unique=True)) if targets else []
        fields: dict[str, Any] = {}
        if draw(st.booleans()):
            fields["limits"] = {
                "max_tokens": draw(st.integers(1, 250_000)),
                "max_wall_s": draw(st.floats(0.5, 250)),
            }
        if rarely(draw):
            fields["model"] = draw(st.sampled_from(MODEL_CHOICES))
        role = draw(st.sampled_from(ROLE_CHOICES)) if rarely(draw) else "writer"
        nodes.append(node(pool[i], role=role, deps=deps, **fields))
    if rarely(draw):
        nodes.append(node(draw(st.sampled_from(pool[:n]))))
    budget = {
        "max_tokens": draw(st.sampled_from([100_000, 1_000_000, 1_000_000])),
        "deadline_s": draw(st.sampled_from([30.0, 200.0, 3600.0, 3600.0])),
    }
    return submission(*nodes, budget=budget) if draw(st.booleans()) else submission(*nodes)


@st.composite
def corrupted_submissions(draw: st.DrawFn) -> Any:
    """A typed submission with one to three parts replaced by junk or removed."""
    raw = draw(typed_submissions())
    for _ in range(draw(st.integers(1, 3))):
        plan = raw.get("plan")
        subtasks = plan.get("subtasks") if isinstance(plan, dict) else None
        where = draw(st.sampled_from(["top", "drop", "plan", "subtask", "field", "field"]))
        if where in {"subtask", "field"} and isinstance(subtasks, list) and subtasks:
            index = draw(st.integers(0, len(subtasks) - 1))
            if where == "subtask" or not isinstance(subtasks[index], dict):
                subtasks[index] = draw(junk)
            else:
                subtasks[index][draw(st.sampled_from(FIELDS))] = draw(junk)
        elif where == "plan":
            raw["plan"] = draw(st.one_of(junk, st.fixed_dictionaries({"subtasks": junk})))
        elif where == "drop":
            raw.pop(draw(st.sampled_from(["task_id", "goal", "plan", "budget"])), None)
        else:
            raw[draw(st.sampled_from(["task_id", "goal", "budget", "extra"]))] = draw(junk)
    return raw


def _acyclic(edges: dict[str, list[str]]) -> bool:
    """Kahn's algorithm, independent of `find_cycle`."""
    indegree = {sid: len(deps) for sid, deps in edges.items()}
    dependents: dict[str, list[str]] = {sid: [] for sid in edges}
    for sid, deps in edges.items():
        for dep in deps:
            dependents[dep].append(sid)
    ready = [sid for sid, count in indegree.items() if count == 0]
    seen = 0
    while ready:
        sid = ready.pop()
        seen += 1
        for dependent in dependents[sid]:
            indegree[dependent] -= 1
            if indegree[dependent] == 0:
                ready.append(dependent)
    return seen == len(edges)


def _check_accepted(result: TaskSubmitted, config: HivebusConfig) -> None:
    """Independently check what an accepted plan must satisfy."""
    assert result.plan is not None
    specs = result.plan.subtasks
    sids = [spec.id for spec in specs]
    assert len(sids) == len(set(sids)), "ids are unique"
    assert all(is_identifier(sid) for sid in sids)
    budget = result.budget
    for spec in specs:
        assert spec.role in config.roles
        role = config.roles[spec.role]
        assert set(spec.depends_on) <= set(sids), "dependencies are known"
        assert spec.id not in spec.depends_on
        if spec.model is not None:
            assert role.allows_model(spec.model)
        run_limits = spec.limits or role.limits
        assert run_limits.max_tokens <= budget.max_tokens
        assert run_limits.max_wall_s <= budget.deadline_s
    assert _acyclic({spec.id: list(dict.fromkeys(spec.depends_on)) for spec in specs})


def _check_answer(answer: Any, config: HivebusConfig) -> bool:
    """Assert the shape of a `validate_submission` answer; return whether it accepted."""
    assert isinstance(answer, tuple)
    assert len(answer) == 2
    result, errors = answer
    assert isinstance(errors, list)
    if result is None:
        assert errors
        assert all(isinstance(error, str) and error.strip() for error in errors)
        return False
    assert isinstance(result, TaskSubmitted)
    assert errors == []
    _check_accepted(result, config)
    return True


def _oracle(raw: dict[str, Any], config: HivebusConfig) -> bool:
    """Whether a typed submission is valid, decided without the code under test."""
    nodes = raw["plan"]["subtasks"]
    budget = TaskBudget.model_validate(raw.get("budget", {}))
    edges = {n["id"]: n["depends_on"] for n in nodes}
    roles = config.roles
    if len(edges) != len(nodes) or any(n["role"] not in roles for n in nodes):
        return False
    for n in nodes:
        role = roles[n["role"]]
        if "model" in n and not role.allows_model(n["model"]):
            return False
        run_limits = Limits.model_validate(n["limits"]) if "limits" in n else role.limits
        if run_limits.max_tokens > budget.max_tokens or run_limits.max_wall_s > budget.deadline_s:
            return False
    return all(d in edges and d != s for s, deps in edges.items() for d in deps) and _acyclic(edges)


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(typed_submissions(), corrupted_submissions(), junk))
def test_validation_never_raises(raw: Any, hive_config: HivebusConfig) -> None:
    """Validation answers any JSON-shaped input and accepts only DAGs of known roles and ids."""
    _check_answer(validate_submission(raw, hive_config), hive_config)


@settings(max_examples=300, deadline=None)
@given(raw=typed_submissions())
def test_validation_accepts_exactly_the_valid_plans(
    raw: dict[str, Any], hive_config: HivebusConfig
) -> None:
    """For well-typed plans, validation accepts if and only if an independent check passes."""
    answer = validate_submission(raw, hive_config)
    assert _check_answer(answer, hive_config) == _oracle(raw, hive_config), answer[1]


def _dags() -> st.SearchStrategy[dict[str, list[str]]]:
    """Random DAGs over shuffled labels: node i may depend only on nodes before it."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, list[str]]:
        n = draw(st.integers(1, 25))
        labels = draw(st.permutations([f"n{i}" for i in range(n)]))
        edges: dict[str, list[str]] = {}
        for i in range(n):
            earlier = st.sampled_from(range(i)) if i else st.nothing()
            picks = draw(st.lists(earlier, max_size=4, unique=True)) if i else []
            edges[labels[i]] = [labels[j] for j in picks]
        order = draw(st.permutations(list(edges)))
        return {sid: edges[sid] for sid in order}

    return build()


def _reaches(edges: dict[str, list[str]], start: str) -> list[str]:
    seen = [start]
    stack = [start]
    while stack:
        for nxt in edges[stack.pop()]:
            if nxt not in seen:
                seen.append(nxt)
                stack.append(nxt)
    return seen


def _assert_is_cycle(cycle: list[str], edges: dict[str, list[str]]) -> None:
    assert len(cycle) >= 2
    assert cycle[0] == cycle[-1]
    assert len(set(cycle[:-1])) == len(cycle) - 1, "a simple cycle"
    for here, there in itertools.pairwise(cycle):
        assert there in edges[here], f"{here} -> {there} is not an edge"


@settings(max_examples=150, deadline=None)
@given(edges=_dags())
def test_find_cycle_finds_none_in_a_dag(edges: dict[str, list[str]]) -> None:
    """`find_cycle` returns None for every DAG."""
    assert find_cycle(edges) is None


@settings(max_examples=150, deadline=None)
@given(edges=_dags(), data=st.data())
def test_find_cycle_finds_a_back_edge(edges: dict[str, list[str]], data: st.DataObject) -> None:
    """Adding one edge back along an existing path makes `find_cycle` return a real cycle."""
    sources = [sid for sid, deps in edges.items() if deps]
    assume(sources)
    start = data.draw(st.sampled_from(sources))
    end = data.draw(st.sampled_from(_reaches(edges, start)[1:]))
    cyclic = {sid: [*deps, start] if sid == end else deps for sid, deps in edges.items()}
    cycle = find_cycle(cyclic)
    assert cycle is not None
    _assert_is_cycle(cycle, cyclic)


def test_find_cycle_self_loop_and_unknown_targets() -> None:
    """A self-loop is a cycle of one; edges to ids outside the graph are ignored."""
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"a": ["ghost"], "b": ["a", "ghost"]}) is None


def test_find_cycle_is_iterative_on_a_long_chain() -> None:
    """A 10,000-node chain (deeper than Python's recursion limit) is handled, cycle or not."""
    n = 10_000
    chain = {f"n{i}": [f"n{i + 1}"] if i + 1 < n else [] for i in range(n)}
    assert find_cycle(chain) is None
    chain[f"n{n - 1}"] = ["n0"]
    cycle = find_cycle(chain)
    assert cycle is not None
    assert len(cycle) == n + 1


def test_budget_defaults_are_used_without_budget(hive_config: HivebusConfig) -> None:
    """With no budget, the default `TaskBudget` bounds the role's default limits (and passes)."""
    assert Limits().max_tokens <= TaskBudget().max_tokens
    assert Limits().max_wall_s <= TaskBudget().deadline_s
    assert validate_submission(submission(node("a")), hive_config)[1] == []


def _scripted_config(base: Path) -> HivebusConfig:
    return parse_config(
        {
            "roles": {
                "writer": {
                    "system": "s",
                    "model": "scripted:w.yaml",
                    "allow_models": ["scripted:*"],
                }
            }
        },
        base,
    )


@pytest.mark.parametrize(
    "route",
    [
        "scripted:/etc/passwd",
        "scripted:../../x.yaml",
        "scripted:scripts/../../outside.yaml",
        "scripted:",
    ],
)
def test_a_plan_cannot_point_a_scripted_model_outside_the_configuration(
    route: str, tmp_path: Path
) -> None:
    """A client's plan may not make an agent open a file outside the configuration's folder."""
    config = _scripted_config(tmp_path / "conf")
    one_error(submission(node("a", model=route)), config, r"scripted model")


def test_a_symbolic_link_out_of_the_configuration_is_refused(tmp_path: Path) -> None:
    """A relative name whose link leads out of the configuration's folder is rejected too."""
    base = tmp_path / "conf"
    base.mkdir()
    (tmp_path / "secret.yaml").write_text("- text: leaked\n", encoding="utf-8")
    (base / "inside.yaml").symlink_to(tmp_path / "secret.yaml")
    config = _scripted_config(base)
    one_error(submission(node("a", model="scripted:inside.yaml")), config, "resolves outside")
    (base / "mine.yaml").write_text("- text: ok\n", encoding="utf-8")
    result, errors = validate_submission(submission(node("a", model="scripted:mine.yaml")), config)
    assert errors == []
    assert result is not None
