"""Re-planning after a failure (`planning.replan`): what the planner is told, what it must do.

    nothing can move, a sub-task did not complete, revisions left
        -> the planner is asked (`revision_input`): what completed (with outputs), what ended
           without completing and why, what that blocked, and the tokens left
    its answer -> `check_revision`: new sub-tasks only, new ids, depending on completed
                  sub-tasks or on each other, and every check a planned plan passes
    accepted   -> `compose`: the plan so far with the revision's sub-tasks after it, so every
                  sub-task keeps its index; what did not complete is `superseded`

Completed sub-tasks are kept and never run again; the superseded stay in the task's record
(their usage counts), but its status and output come from the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hivebus.contracts import Plan, SubTaskState, SubTaskStatus, TaskSubmitted
from hivebus.core import HivebusConfig
from hivebus.orchestrator.graph import Graph
from hivebus.orchestrator.handover import OUTPUT_PREVIEW_CHARS, output_text
from hivebus.orchestrator.plan_checks import bounds, parse_answer
from hivebus.orchestrator.validation import validate_submission

S = SubTaskStatus

REVISE = (
    "Some sub-tasks of this task's plan ended without completing. `revision` in the input "
    "says what completed (with its output), what did not and why, and what that blocked. "
    "Plan the remaining work: answer with a plan of new sub-tasks only, with ids not used in "
    "the plan so far. They may depend on completed sub-tasks by id (whose outputs are handed "
    "over) and on each other; completed sub-tasks are kept and never run again. Their token "
    "limits together must fit `revision.tokens_left`. Answer with the plan only."
)


def live(states: Iterable[SubTaskState], superseded: Iterable[str]) -> list[SubTaskState]:
    """The sub-tasks that count for the task: all but those a revision replaced."""
    replaced = set(superseded)
    return [state for state in states if state.id not in replaced]


def needs_revision(states: Iterable[SubTaskState], superseded: Iterable[str]) -> bool:
    """Whether a sub-task that counts ended without completing."""
    return any(state.status != S.COMPLETED for state in live(states, superseded))


def tokens_left(submission: TaskSubmitted, used: int) -> int:
    """What the task budget still allows in tokens (never below 0)."""
    return max(0, submission.budget.max_tokens - used)


def _preview(output: object) -> str:
    text = output_text(output)
    return text if len(text) <= OUTPUT_PREVIEW_CHARS else text[:OUTPUT_PREVIEW_CHARS] + " [...]"


def revision_input(
    generation: int,
    graph: Graph,
    states: Mapping[str, SubTaskState],
    superseded: Iterable[str],
    left: int,
) -> dict[str, Any]:
    """What the planner is told about the plan so far, for revision `generation`."""
    replaced = set(superseded)
    completed, ended, blocked = [], [], []
    for sid, spec in graph.specs.items():
        state = states.get(sid)
        if sid in replaced or state is None:
            continue
        if state.status == S.COMPLETED:
            completed.append(
                {
                    "id": sid,
                    "role": spec.role,
                    "prompt": spec.prompt,
                    "output": _preview(state.output),
                }
            )
        elif state.status == S.BLOCKED:
            blocked.append({"id": sid, "role": spec.role, "blocked_by": state.blocked_by})
        else:
            ended.append(
                {"id": sid, "role": spec.role, "status": state.status.value, "reason": state.reason}
            )
    return {
        "generation": generation,
        "completed": completed,
        "failed": ended,
        "blocked": blocked,
        "used_ids": sorted(graph.specs),
        "tokens_left": left,
    }


def _own_ids(raw: list[Any], graph: Graph, completed: set[str]) -> tuple[list[Any], list[str]]:
    """The sub-tasks with dependencies on completed ones taken out, and what is wrong."""
    errors: list[str] = []
    stripped: list[Any] = []
    done = ", ".join(sorted(completed)) or "none"
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            stripped.append(item)
            continue
        sid = item.get("id")
        if isinstance(sid, str) and sid in graph.specs:
            errors.append(
                f"plan.subtasks.{i}.id: {sid!r} is already a sub-task of this task; a "
                "revision adds sub-tasks with new ids (and may depend on completed ones)"
            )
        deps = item.get("depends_on", [])
        if not isinstance(deps, list):
            stripped.append(item)
            continue
        errors.extend(
            f"plan.subtasks.{i}.depends_on: {dep!r} did not complete; depend on "
            f"completed sub-tasks ({done}) or on this revision's"
            for dep in deps
            if isinstance(dep, str) and dep in graph.specs and dep not in completed
        )
        own = [d for d in deps if not (isinstance(d, str) and d in completed)]
        stripped.append({**item, "depends_on": own})
    return stripped, errors


def check_revision(
    submission: TaskSubmitted,
    graph: Graph,
    states: Mapping[str, SubTaskState],
    answer: Any,
    *,
    left: int,
    config: HivebusConfig,
) -> tuple[Plan | None, list[str]]:
    """The revision's new sub-tasks as a plan, or None and every reason it is not one.

    On top of its own rules it passes what a planned plan passes, with what is left of the
    task budget in place of the budget.
    """
    candidate, problem = parse_answer(answer)
    if problem is not None:
        return None, [problem]
    completed = {sid for sid, state in states.items() if state.status == S.COMPLETED}
    stripped, errors = _own_ids(candidate["subtasks"], graph, completed)
    if errors:
        return None, errors
    raw = submission.model_dump(mode="json")
    raw["plan"] = {**candidate, "subtasks": stripped}
    checked, errors = validate_submission(raw, config)
    if checked is None or checked.plan is None:
        return None, errors or ["plan: missing"]
    errors = bounds(checked.plan, left, "what is left of the task budget's max_tokens", config)
    if errors:
        return None, errors
    return Plan.model_validate({**candidate, "subtasks": candidate["subtasks"]}), []


def compose(submission: TaskSubmitted, base: Plan, part: Plan) -> TaskSubmitted:
    """The submission with the plan so far and the revision's sub-tasks after it."""
    plan = Plan(subtasks=[*base.subtasks, *part.subtasks])
    return submission.model_copy(update={"plan": plan})


def replaced_now(
    graph: Graph, states: Mapping[str, SubTaskState], superseded: Iterable[str]
) -> list[str]:
    """The sub-tasks a revision supersedes now: every one that counted and did not complete."""
    replaced = set(superseded)
    return [
        sid
        for sid in graph.specs
        if sid not in replaced and (states.get(sid) is None or states[sid].status != S.COMPLETED)
    ]
