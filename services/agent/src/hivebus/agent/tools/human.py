"""`ask_human`: the model asks a person, and the person's answer is the call's result.

The runtime never runs this function: a call pauses the run (an `ApprovalRequested` of kind
`question`), a person answers with `respond` (or declines with `reject`), and the resumed run
hands the model `{"answer": ..., "by": ...}` (or a `rejected` result). Its tier is `read` (it
changes nothing), so any role that lists it may ask; what waits is the question, not a worker.
"""

from __future__ import annotations

from hivebus.agent.errors import ToolFailure
from hivebus.agent.tool import tool
from hivebus.contracts import ToolErrorKind


@tool(tier="read", timeout_s=5.0, asks_human=True)
def ask_human(question: str) -> str:
    """Ask a person a question and wait for the answer; use it only when you cannot go on alone.

    Write the question so it can be answered without more context: what you need, and why.
    """
    raise ToolFailure(
        f"nobody can answer {question[:200]!r} here: questions are asked only inside a run",
        "go on without the answer, or say in your final answer what you need to know",
        ToolErrorKind.DENIED,
    )
