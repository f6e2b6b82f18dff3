"""Knowledge-store tools: read, write (with the revision you read), list and search notes.

Notes are Markdown in a shared Git repository; every write is a commit by this agent. A write
that names a revision which is no longer current is refused with the current content, so two
agents editing one note never silently overwrite each other.
"""

from __future__ import annotations

from typing import Any

from hivebus.agent.errors import ToolFailure
from hivebus.agent.tool import ToolContext, tool
from hivebus.contracts import ToolErrorKind
from hivebus.contracts.knowledge import NoteWrite
from hivebus.core.knowledge_client import KnowledgeClient


def _client(context: ToolContext) -> KnowledgeClient:
    client = context.clients.get("knowledge")
    if not isinstance(client, KnowledgeClient):
        raise ToolFailure(
            "the knowledge store is not connected to this agent",
            "continue without notes; say in your answer that they were unavailable",
            ToolErrorKind.PERMANENT,
        )
    return client


@tool(tier="read", timeout_s=15.0)
async def kb_read(path: str, context: ToolContext) -> dict[str, Any]:
    """Read a note (for example 'tasks/t-1/findings.md'); returns its content and revision."""
    result = await _client(context).read(path)
    if result.error:
        raise ToolFailure(
            result.error, "use a path like 'shared/topic.md'", ToolErrorKind.INVALID_ARGUMENTS
        )
    if not result.found:
        raise ToolFailure(f"no note at {path!r}", "call kb_list or kb_search to find notes")
    return {"path": result.path, "content": result.content, "revision": result.revision}


@tool(tier="write_safe", timeout_s=40.0)
async def kb_write(  # noqa: PLR0917 - the model passes these by name
    path: str,
    body: str,
    context: ToolContext,
    title: str = "",
    tags: list[str] | None = None,
    expected_revision: str | None = None,
) -> dict[str, Any]:
    """Create or replace a note; pass the revision you read (or 'new') not to overwrite others."""
    result = await _client(context).write(
        NoteWrite(
            write_id=context.idempotency_key.replace(":", "-"),
            task_id=context.task_id,
            subtask_id=context.subtask_id,
            run_id=context.run_id,
            role=context.role,
            path=path,
            title=title,
            tags=tags or [],
            body=body,
            expected_revision=expected_revision,
        )
    )
    if result.status == "invalid":
        raise ToolFailure(
            result.error or "invalid write",
            "use a path like 'shared/topic.md'",
            ToolErrorKind.INVALID_ARGUMENTS,
        )
    if result.status == "conflict":
        return {
            "status": "conflict",
            "current_revision": result.current_revision,
            "current_content": result.current_content,
            "suggestion": "merge your change into current_content and write again with "
            "expected_revision set to current_revision",
        }
    return {"status": result.status, "path": result.path, "revision": result.revision}


@tool(tier="read", timeout_s=15.0)
async def kb_list(context: ToolContext, prefix: str = "") -> list[str]:
    """List note paths under a folder (for example 'shared' or 'tasks/t-1')."""
    result = await _client(context).list(prefix)
    if result.error:
        raise ToolFailure(
            result.error, "give a folder like 'shared'", ToolErrorKind.INVALID_ARGUMENTS
        )
    return result.paths


@tool(tier="read", timeout_s=15.0)
async def kb_search(query: str, context: ToolContext, limit: int = 5) -> list[dict[str, Any]]:
    """Search every note's text; returns the best matches with a snippet each."""
    result = await _client(context).search(query, max(1, min(limit, 20)))
    return [hit.model_dump() for hit in result.hits]
