"""Handing a finished sub-task's output to the sub-tasks that depend on it: inline, or by note.

An output too large for one message arrives as a preview and an `artifacts` object
(`output_ref`); the dependent gets both and reads the object. An output longer than
`INLINE_OUTPUT_CHARS` is written to the knowledge store when its sub-task completes
(`output_note`), and a dependent gets the note's path and a preview
instead of the whole text. A dependent is dispatched only once that note is readable: the
scheduler asks `NoteWatch.committed` first, and until the knowledge service has committed the
note the hand-over raises `HandoverNotReadyError` (retryable: the result event is delivered
again a moment later). A note that could not be written at all is handed over inline.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Protocol

from hivebus.contracts import DependencyOutput, SubTaskState
from hivebus.contracts.knowledge import NoteWrite, output_note_path

INLINE_OUTPUT_CHARS = 8000
"""Dependency outputs longer than this are handed over as a note reference, not inline."""

OUTPUT_PREVIEW_CHARS = 500
"""How much of a referenced output travels inline, as a preview."""

NOTE_OUTPUT_CHARS = 200_000
"""How much of an output its note keeps."""


class HandoverNotReadyError(Exception):
    """A dependency's output note is not committed yet; try the hand-over again shortly."""

    retryable = True


class NoteWatch(Protocol):
    """Tells whether a note write has been applied by the knowledge store."""

    async def committed(self, write_id: str) -> bool | None:
        """True once readable, False if the write failed for good, None if not applied yet."""
        ...


def output_text(output: object) -> str:
    """An output as the text a note holds."""
    if output is None:
        return ""
    return output if isinstance(output, str) else json.dumps(output, indent=2, default=str)


def is_large(output: object) -> bool:
    """Whether an output is handed over by reference."""
    return len(output_text(output)) > INLINE_OUTPUT_CHARS


def output_write_id(task_id: str, subtask_id: str) -> str:
    """The write id of a sub-task's output note (written once, whoever writes it)."""
    return f"{task_id}-{subtask_id}-output"


def output_note(task_id: str, subtask_id: str, output: object) -> NoteWrite:
    """The note that holds a sub-task's large output."""
    return NoteWrite(
        write_id=output_write_id(task_id, subtask_id),
        task_id=task_id,
        subtask_id=subtask_id,
        role="orchestrator",
        path=output_note_path(task_id, subtask_id),
        title=f"Output of {subtask_id}",
        tags=["output"],
        body=output_text(output)[:NOTE_OUTPUT_CHARS],
    )


async def hand_over(
    task_id: str,
    depends_on: list[str],
    read: Callable[[str], Awaitable[SubTaskState | None]],
    notes: NoteWatch,
) -> list[DependencyOutput]:
    """The outputs of `depends_on` as a dependent receives them.

    Raises:
        HandoverNotReadyError: a large output's note is not committed yet.
    """
    handed: list[DependencyOutput] = []
    for dep in depends_on:
        state = await read(dep)
        output = state.output if state else None
        if state is not None and state.output_ref is not None:  # too large for any message
            handed.append(
                DependencyOutput(subtask_id=dep, output=output, output_ref=state.output_ref)
            )
            continue
        if not is_large(output):
            handed.append(DependencyOutput(subtask_id=dep, output=output))
            continue
        readable = await notes.committed(output_write_id(task_id, dep))
        if readable is None:
            raise HandoverNotReadyError(f"the output note of {dep!r} is not committed yet")
        if not readable:  # the store refused the note: hand the whole output over instead
            handed.append(DependencyOutput(subtask_id=dep, output=output))
            continue
        handed.append(
            DependencyOutput(
                subtask_id=dep,
                output=output_text(output)[:OUTPUT_PREVIEW_CHARS] + " [...]",
                note=output_note_path(task_id, dep),
            )
        )
    return handed
