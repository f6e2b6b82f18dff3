"""What a run says to the model first, and how its final answer becomes the output."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonschema

from hivebus.contracts import Message, SubTaskAssigned

RUNTIME_PREFIX = "[hivebus]"
"""How the runtime's own turns to the model begin (wrap-up notes, corrections, loop warnings)."""

DEPENDENCY_CHARS = 100_000
"""How much of a dependency output passed by reference the prompt inlines."""


def inline_outputs(assignment: SubTaskAssigned, outputs: Mapping[str, Any]) -> SubTaskAssigned:
    """The assignment with the whole outputs of its dependencies passed by reference.

    `outputs` holds what the caller fetched from the artifacts (`output_ref`), by sub-task
    id. A referenced dependency missing from it keeps its preview, with a note that the rest
    could not be read.
    """
    dependencies = []
    for dep in assignment.dependencies:
        if dep.output_ref is None:
            dependencies.append(dep)
            continue
        output = (
            outputs[dep.subtask_id]
            if dep.subtask_id in outputs
            else f"{_text(dep.output)}\n{RUNTIME_PREFIX} only this beginning could be read: "
            f"the artifact {dep.output_ref} is not there."
        )
        dependencies.append(dep.model_copy(update={"output": output}))
    return assignment.model_copy(update={"dependencies": dependencies})


def _text(output: Any) -> str:
    if output is None:
        return ""
    return output if isinstance(output, str) else json.dumps(output, indent=2, default=str)


def _bounded(text: str, note: str | None, limit: int = DEPENDENCY_CHARS) -> str:
    if len(text) <= limit:
        return text
    rest = f"; read on in the note {note!r} with kb_read" if note else ""
    return f"{text[:limit]}\n{RUNTIME_PREFIX} cut here: {limit} of {len(text)} characters{rest}."


def build_prompt(assignment: SubTaskAssigned) -> str:
    """The first user turn: the sub-task's prompt, the task goal, inputs and dependency outputs.

    An output passed by reference is inlined as far as `inline_outputs` made it whole, up to
    `DEPENDENCY_CHARS` characters.
    """
    parts = [assignment.prompt, f"\nOverall goal of the task: {assignment.goal}"]
    if assignment.input:
        parts.append(f"\nInput:\n{json.dumps(assignment.input, indent=2, default=str)}")
    for dep in assignment.dependencies:
        if dep.output_ref is not None:
            parts.append(
                f"\nOutput of sub-task {dep.subtask_id!r}:\n{_bounded(_text(dep.output), dep.note)}"
            )
        elif dep.note:
            parts.append(
                f"\nOutput of sub-task {dep.subtask_id!r} is long: read it from the note "
                f"{dep.note!r} with kb_read. It begins:\n{dep.output}"
            )
        else:
            parts.append(
                f"\nOutput of sub-task {dep.subtask_id!r}:\n"
                f"{json.dumps(dep.output, indent=2, default=str)}"
            )
    if assignment.output_schema is not None:
        parts.append(
            "\nAnswer with JSON only, valid against this JSON Schema:\n"
            + json.dumps(assignment.output_schema)
        )
    return "\n".join(parts)


def runtime_note(text: str) -> Message:
    """A note from the runtime to the model, as a user turn."""
    return Message(role="user", text=f"{RUNTIME_PREFIX} {text}")


def parse_output(text: str, schema: dict[str, Any] | None) -> tuple[Any, str | None]:
    """The final output: plain text, or JSON valid against `schema`. Returns (output, error)."""
    if schema is None:
        return text, None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return text, f"the answer is not JSON: {exc.msg} at position {exc.pos}"
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the top level"
        return text, f"the answer does not match the output schema at {where}: {exc.message}"
    except jsonschema.SchemaError as exc:
        return text, f"the sub-task's output schema is invalid: {exc.message}"
    return value, None
