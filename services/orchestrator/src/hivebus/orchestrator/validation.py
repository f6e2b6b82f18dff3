"""Validate a submission: structure (pydantic) and meaning (a DAG of known roles within budget).

Every problem is collected, so one `TaskRejected` can list them all.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ValidationError

from hivebus.contracts import (
    MAX_SUBTASKS,
    PLANNING_SUBTASK,
    Limits,
    TaskBudget,
    TaskSubmitted,
    describe_validation_error,
    is_identifier,
)
from hivebus.core import HivebusConfig

SCRIPTED = "scripted:"


def scripted_path_error(route: str, base_dir: Path) -> str | None:
    """Why a plan may not name this `scripted:` route, or None when it may.

    A plan comes from a client: the file it names must be relative to the configuration's
    directory and stay inside it (no absolute path, no `..`, no symbolic link leading out).
    """
    name = route.removeprefix(SCRIPTED)
    pure = PurePosixPath(name.replace("\\", "/"))
    if not name or "\x00" in name or pure.is_absolute() or ".." in pure.parts:
        return (
            f"model {route!r}: a plan's scripted model must be a path relative to the "
            "configuration's directory, without '..'"
        )
    root = base_dir.resolve()
    if not (root / name).resolve().is_relative_to(root):
        return f"model {route!r}: the scripted model's file resolves outside the configuration"
    return None


def find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """Return one cycle (as a list of ids, first repeated last) or None; O(V+E), iterative."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(edges, white)
    for start in edges:
        if color[start] != white:
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = [start]
        color[start] = grey
        while stack:
            node, index = stack[-1]
            deps = edges[node]
            if index < len(deps):
                stack[-1] = (node, index + 1)
                nxt = deps[index]
                if nxt not in color:
                    continue
                if color[nxt] == grey:
                    return [*path[path.index(nxt) :], nxt]
                if color[nxt] == white:
                    color[nxt] = grey
                    stack.append((nxt, 0))
                    path.append(nxt)
            else:
                color[node] = black
                stack.pop()
                path.pop()
    return None


def _subtask_errors(
    where: str, raw: dict[str, Any], config: HivebusConfig, budget: TaskBudget | None
) -> list[str]:
    """Role, model and limit checks of one raw sub-task."""
    errors: list[str] = []
    role_name = raw.get("role")
    role = config.roles.get(role_name) if isinstance(role_name, str) else None
    if isinstance(role_name, str) and role is None:
        errors.append(f"{where}: unknown role {role_name!r}; known roles: {sorted(config.roles)}")
    model = raw.get("model")
    if isinstance(model, str) and role is not None and not role.allows_model(model):
        errors.append(
            f"{where}: role {role_name!r} does not allow model {model!r} "
            f"(allow_models: {role.allow_models or 'none'})"
        )
    elif isinstance(model, str) and model.startswith(SCRIPTED):
        problem = scripted_path_error(model, config.base_dir)
        if problem is not None:
            errors.append(f"{where}: {problem}")
    errors.extend(_limit_errors(where, raw.get("limits"), role.limits if role else None, budget))
    return errors


def _graph_errors(ids: list[str], edges: dict[str, list[str]]) -> list[str]:
    """Unknown dependencies, self-dependencies and cycles."""
    errors: list[str] = []
    known = set(ids)
    for sid, deps in edges.items():
        repeated = sorted(dep for dep, count in Counter(deps).items() if count > 1)
        if repeated:
            errors.append(f"sub-task {sid!r} lists {repeated} more than once in depends_on")
        for dep in deps:
            if dep == sid:
                errors.append(f"sub-task {sid!r} depends on itself")

            elif dep not in known:
                errors.append(f"sub-task {sid!r} depends on unknown sub-task {dep!r}")
    cycle = find_cycle(
        {sid: [d for d in deps if d in known and d != sid] for sid, deps in edges.items()}
    )
    if cycle is not None:
        errors.append(f"the plan has a dependency cycle: {' -> '.join(cycle)}")
    return errors


def _semantic_errors(
    raw_subtasks: list[Any], config: HivebusConfig, budget: TaskBudget | None
) -> list[str]:
    """Checks on the raw sub-task list, lenient to bad shapes so every error is found."""
    errors: list[str] = []
    ids: list[str] = []
    edges: dict[str, list[str]] = {}
    for index, raw in enumerate(raw_subtasks):
        if not isinstance(raw, dict):
            continue
        sid = raw.get("id")
        where = f"plan.subtasks.{index}" + (f" ({sid})" if isinstance(sid, str) else "")
        deps = raw.get("depends_on") or []
        deps = [d for d in deps if isinstance(d, str)] if isinstance(deps, list) else []
        if sid == PLANNING_SUBTASK:
            errors.append(f"{where}: the sub-task id {sid!r} is reserved for planning")
        if isinstance(sid, str):
            if sid in edges:
                errors.append(f"{where}: duplicate sub-task id {sid!r}")
            else:
                edges[sid] = deps
            ids.append(sid)
        errors.extend(_subtask_errors(where, raw, config, budget))
    return errors + _graph_errors(ids, edges)


def _limit_errors(
    where: str, raw_limits: Any, role_limits: Limits | None, budget: TaskBudget | None
) -> list[str]:
    if budget is None:
        return []
    limits: Limits | None = role_limits
    if isinstance(raw_limits, dict):
        try:
            limits = Limits.model_validate(raw_limits)
        except ValidationError:
            return []  # reported by the structural pass
    if limits is None:
        return []
    errors = []
    if limits.max_tokens > budget.max_tokens:
        errors.append(
            f"{where}: limits.max_tokens {limits.max_tokens} exceeds the task budget's "
            f"max_tokens {budget.max_tokens}"
        )
    if limits.max_wall_s > budget.deadline_s:
        errors.append(
            f"{where}: limits.max_wall_s {limits.max_wall_s:g} exceeds the task's "
            f"deadline_s {budget.deadline_s:g}"
        )
    return errors


def validate_submission(raw: Any, config: HivebusConfig) -> tuple[TaskSubmitted | None, list[str]]:
    """Return the submission and no errors, or None and every error found."""
    if not isinstance(raw, dict):
        return None, ["submission: must be a JSON object"]
    errors: list[str] = []
    submission: TaskSubmitted | None = None
    try:
        submission = TaskSubmitted.model_validate(raw)
    except ValidationError as exc:
        errors.extend(describe_validation_error(exc, "submission"))
    budget: TaskBudget | None = submission.budget if submission else None
    if budget is None:
        try:
            budget = TaskBudget.model_validate(raw.get("budget") or {})
        except ValidationError:
            budget = None
    plan = raw.get("plan")
    if plan is None:
        if config.planning.role not in config.roles:
            errors.append(
                f"plan: missing, and no {config.planning.role!r} role is configured to plan "
                "from the goal (planning.role): submit an explicit plan or configure one"
            )
    elif isinstance(plan, dict) and isinstance(plan.get("subtasks"), list | tuple):
        subtasks = list(plan["subtasks"])
        if len(subtasks) <= MAX_SUBTASKS:
            errors.extend(_semantic_errors(subtasks, config, budget))
    return (submission if not errors else None), errors


def task_id_of(raw: Any, header_id: str | None) -> str | None:
    """The task id to answer a rejection on: the body's if valid, else the message id header."""
    if (
        isinstance(raw, dict)
        and isinstance(raw.get("task_id"), str)
        and is_identifier(raw["task_id"])
    ):
        return str(raw["task_id"])
    if header_id and is_identifier(header_id):
        return header_id
    return None
