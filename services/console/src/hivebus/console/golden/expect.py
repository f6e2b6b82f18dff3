"""Expectations of a golden task, and how a run is judged against them.

`expect.yaml` holds what the task must show, recorded exact and meant to be loosened:

    task:     {status, reason}
    subtasks: {ID: {status, reason, output, flags, steps, tools, tokens, cost_usd}}

`tools` is the run's tool calls in order: `NAME`, or `NAME (KIND)` for one that failed.

Each value is either the exact value expected or a matcher, a mapping of only these keys:

    {pattern: REGEX}          the value (as text; JSON for non-text) contains a match
    {schema: JSON_SCHEMA}     the value validates against the schema
    {min: N, max: M}          a number in the range (either bound may be left out)
    {equals: VALUE}           exactly VALUE (for an expected mapping that looks like a matcher)

A key left out is not checked. A sub-task the run has and the expectations do not, or the
other way round, is a difference.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema

from hivebus.console.golden.observe import TaskRecord

MATCHER_KEYS = frozenset({"pattern", "schema", "min", "max", "equals"})
SUBTASK_FIELDS = ("status", "reason", "output", "flags", "steps", "tools", "tokens", "cost_usd")
TASK_FIELDS = ("status", "reason")
PREVIEW = 120


class ExpectationError(ValueError):
    """An expectations file that cannot be used: names the entry and what is wrong."""


def _is_matcher(spec: Any) -> bool:
    return isinstance(spec, Mapping) and bool(spec) and set(spec) <= MATCHER_KEYS


def _check_pattern(spec: Mapping[str, Any], where: str) -> None:
    if set(spec) != {"pattern"} or not isinstance(spec["pattern"], str):
        raise ExpectationError(f"{where}: `pattern` stands alone and is a text")
    try:
        re.compile(spec["pattern"])
    except re.error as exc:
        raise ExpectationError(f"{where}: `pattern` is not a regular expression: {exc}") from exc


def _check_schema(spec: Mapping[str, Any], where: str) -> None:
    if set(spec) != {"schema"} or not isinstance(spec["schema"], Mapping):
        raise ExpectationError(f"{where}: `schema` stands alone and is a JSON Schema mapping")
    try:
        jsonschema.Draft202012Validator.check_schema(spec["schema"])
    except jsonschema.SchemaError as exc:
        raise ExpectationError(f"{where}: `schema` is not a JSON Schema: {exc.message}") from exc


def _check_range(spec: Mapping[str, Any], where: str) -> None:
    if not set(spec) <= {"min", "max"}:
        raise ExpectationError(f"{where}: `min` and `max` go together, without other keys")
    for bound, value in spec.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ExpectationError(f"{where}: `{bound}` must be a number, not {value!r}")
    if "min" in spec and "max" in spec and spec["min"] > spec["max"]:
        raise ExpectationError(f"{where}: `min` is above `max`")


def check_spec(spec: Any, where: str) -> None:
    """Raise `ExpectationError` when `spec` is a matcher that is malformed."""
    if not _is_matcher(spec):
        return
    if "equals" in spec:
        if set(spec) != {"equals"}:
            raise ExpectationError(f"{where}: `equals` stands alone")
    elif "pattern" in spec:
        _check_pattern(spec, where)
    elif "schema" in spec:
        _check_schema(spec, where)
    else:
        _check_range(spec, where)


def parse_expectations(data: Any, source: str) -> dict[str, Any]:
    """Validate expectations data (the layout above); return it as a plain mapping."""
    if not isinstance(data, Mapping) or not set(data) <= {"task", "subtasks"}:
        raise ExpectationError(f"{source}: must be a mapping of `task` and `subtasks`")
    task = data.get("task") or {}
    if not isinstance(task, Mapping) or not set(task) <= set(TASK_FIELDS):
        raise ExpectationError(f"{source}: `task` may hold only {', '.join(TASK_FIELDS)}")
    for key, spec in task.items():
        check_spec(spec, f"{source}: task.{key}")
    subtasks = data.get("subtasks") or {}
    if not isinstance(subtasks, Mapping):
        raise ExpectationError(f"{source}: `subtasks` must map sub-task ids to expectations")
    for subtask_id, fields in subtasks.items():
        where = f"{source}: subtasks.{subtask_id}"
        if not isinstance(fields, Mapping) or not set(fields) <= set(SUBTASK_FIELDS):
            raise ExpectationError(f"{where} may hold only {', '.join(SUBTASK_FIELDS)}")
        for key, spec in fields.items():
            check_spec(spec, f"{where}.{key}")
    return {"task": dict(task), "subtasks": {str(k): dict(v) for k, v in subtasks.items()}}


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return repr(text if len(text) <= PREVIEW else text[:PREVIEW] + "…")


def _mismatch_range(spec: Mapping[str, Any], actual: Any) -> str | None:
    if isinstance(actual, bool) or not isinstance(actual, int | float):
        return f"expected a number, got {_show(actual)}"
    low, high = spec.get("min"), spec.get("max")
    if (low is not None and actual < low) or (high is not None and actual > high):
        return (
            f"expected {'' if low is None else low}..{'' if high is None else high}, got {actual}"
        )
    return None


def _mismatch_schema(schema: Mapping[str, Any], actual: Any) -> str | None:
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(actual), key=str)
    if not errors:
        return None
    return f"does not match its schema ({errors[0].message}), got {_show(actual)}"


def mismatch(spec: Any, actual: Any) -> str | None:
    """Why `actual` does not meet `spec`, or None when it does."""
    if not _is_matcher(spec) or "equals" in spec:
        exact = spec["equals"] if _is_matcher(spec) else spec
        return None if exact == actual else f"expected {_show(exact)}, got {_show(actual)}"
    if "pattern" in spec:
        text = actual if isinstance(actual, str) else json.dumps(actual, default=str)
        if re.search(spec["pattern"], text):
            return None
        return f"expected a match of /{spec['pattern']}/, got {_show(actual)}"
    if "schema" in spec:
        return _mismatch_schema(spec["schema"], actual)
    return _mismatch_range(spec, actual)


@dataclass(frozen=True)
class Difference:
    """One way a run differs from its expectations."""

    where: str
    """`task` or the sub-task id."""
    field: str
    detail: str

    def __str__(self) -> str:
        """`where: field: detail`."""
        return f"{self.where}: {self.field}: {self.detail}"


def compare(expected: Mapping[str, Any], run: TaskRecord) -> list[Difference]:
    """Every difference between `expected` (parsed) and what `run` did."""
    found: list[Difference] = []
    for name, spec in expected.get("task", {}).items():
        problem = mismatch(spec, getattr(run, name))
        if problem:
            found.append(Difference("task", name, problem))
    wanted: Mapping[str, Mapping[str, Any]] = expected.get("subtasks", {})
    for subtask_id, fields in wanted.items():
        record = run.subtasks.get(subtask_id)
        if record is None:
            found.append(Difference(subtask_id, "ran", "expected to run, and it did not"))
            continue
        for name, spec in fields.items():
            problem = mismatch(spec, getattr(record, name))
            if problem:
                found.append(Difference(subtask_id, name, problem))
    found.extend(
        Difference(subtask_id, "ran", f"not expected, and it ran ({record.status})")
        for subtask_id, record in run.subtasks.items()
        if subtask_id not in wanted
    )
    return found


def recorded(run: TaskRecord) -> dict[str, Any]:
    """Exact expectations of `run`: what a recording writes to `expect.yaml`."""
    return {
        "task": {"status": run.status, "reason": run.reason},
        "subtasks": {
            subtask_id: {name: getattr(record, name) for name in SUBTASK_FIELDS}
            for subtask_id, record in run.subtasks.items()
        },
    }
