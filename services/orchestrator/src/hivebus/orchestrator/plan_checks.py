"""A planner's answer as a plan: parsed, then held to every check an explicit plan passes.

On top of those (roles, unique ids, dependencies that exist, no cycle, allowed models, each
sub-task's limits within the task budget) a planned plan is bounded by `planning.max_subtasks`
and `planning.max_depth`, and its sub-tasks' token limits together must fit the task budget:
an explicit plan is the client's to size, a planned one is not. Every error is returned, in
words the planner is sent back to act on.
"""

from __future__ import annotations

import json
import re
from typing import Any

from hivebus.contracts import Limits, Plan, TaskSubmitted
from hivebus.core import HivebusConfig
from hivebus.orchestrator.validation import validate_submission

PLAN_SCHEMA: dict[str, Any] = Plan.model_json_schema()
"""What the planner must answer: the plan's JSON Schema (the agent checks the shape)."""

_FENCE = re.compile(r"^```(?:json)?\s*\n(.*)\n```\s*$", re.DOTALL)


def parse_answer(answer: Any) -> tuple[Any, str | None]:
    """The plan object in a planner's answer (JSON text or already parsed), or why none is."""
    if isinstance(answer, str):
        text = answer.strip()
        fenced = _FENCE.match(text)
        try:
            answer = json.loads(fenced.group(1) if fenced else text)
        except json.JSONDecodeError as exc:
            return None, f"the answer is not JSON: {exc.msg} at position {exc.pos}"
    if isinstance(answer, dict) and "plan" in answer and "subtasks" not in answer:
        answer = answer["plan"]  # {"plan": {...}} is read as the plan it wraps
    if not isinstance(answer, dict) or not isinstance(answer.get("subtasks"), list):
        return None, 'the answer is not a plan: expected an object {"subtasks": [...]}'
    return answer, None


def depth(plan: Plan) -> int:
    """The number of sub-tasks in the plan's longest dependency chain (the plan is acyclic)."""
    deps = {s.id: s.depends_on for s in plan.subtasks}
    longest: dict[str, int] = {}
    for start in deps:
        stack = [start]
        while stack:
            sid = stack[-1]
            waiting = [d for d in deps[sid] if d not in longest]
            if waiting:
                stack.extend(waiting)
                continue
            stack.pop()
            longest[sid] = 1 + max((longest[d] for d in deps[sid]), default=0)
    return max(longest.values(), default=0)


def bounds(plan: Plan, allowance: int, what: str, config: HivebusConfig) -> list[str]:
    """Why a planner's plan is too big: sub-tasks, depth, or token limits over `allowance`."""
    errors = []
    bounds = config.planning
    if len(plan.subtasks) > bounds.max_subtasks:
        errors.append(
            f"plan.subtasks: {len(plan.subtasks)} sub-tasks, more than planning.max_subtasks "
            f"({bounds.max_subtasks})"
        )
    longest = depth(plan)
    if longest > bounds.max_depth:
        errors.append(
            f"plan: its longest dependency chain has {longest} sub-tasks, more than "
            f"planning.max_depth ({bounds.max_depth})"
        )
    limits: list[Limits] = [s.limits or config.roles[s.role].limits for s in plan.subtasks]
    tokens = sum(limit.max_tokens for limit in limits)
    if tokens > allowance:
        errors.append(
            f"plan: the sub-tasks' limits.max_tokens add up to {tokens}, over {what} "
            f"({allowance}); give fewer sub-tasks or lower limits"
        )
    return errors


def check_planned(
    submission: TaskSubmitted, answer: Any, config: HivebusConfig
) -> tuple[TaskSubmitted | None, list[str]]:
    """The submission with the planner's plan, or None and every reason it is not one."""
    candidate, problem = parse_answer(answer)
    if problem is not None:
        return None, [problem]
    raw = submission.model_dump(mode="json")
    raw["plan"] = candidate
    planned, errors = validate_submission(raw, config)
    if planned is None or planned.plan is None:
        return None, errors or ["plan: missing"]
    allowance = planned.budget.max_tokens
    errors = bounds(planned.plan, allowance, "the task budget's max_tokens", config)
    return (planned if not errors else None), errors
