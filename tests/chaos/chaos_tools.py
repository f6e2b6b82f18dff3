"""Tools for the chaos tests, imported by `hivebus serve agent` processes through PYTHONPATH.

Every file they write lives in the run's workspace, which all worker processes of a test
share. Each line is appended with one `write` to a file opened `O_APPEND`, so a worker killed
mid-call leaves no torn line behind; checking the ledger and appending to it (with `calls`)
happen under an exclusive `flock` of `ledger.lock`, so two workers never both apply one key.

- `ledger_append`: a write whose effect must happen once per idempotency key, after a short
  pause (so kills land inside tool calls too). Every invocation is appended to `calls`; the
  key is appended to `ledger` only if absent.
- `slow_append`: appends to `entered` at once, then the same write after `seconds`, long
  enough to stop or kill the worker inside it.
- `crash`: appends to `crashes`, then ends its worker process on the spot (`os._exit`).
- `risky_apply`: a `write_risky` effect (so it needs a person's approval): applied at once,
  once per key, then `seconds` of waiting, so a kill lands after the effect and before the
  run's checkpoint of it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

from hivebus.agent import ToolContext, tool

LEDGER = "ledger"
"""One line per applied effect: `<subtask_id> <idempotency_key>`."""
CALLS = "calls"
"""One line per invocation: `<subtask_id> <idempotency_key> <pid>`."""
LOCK = "ledger.lock"
"""The file whose `flock` serialises the ledger's check-and-append across processes."""


def _append_line(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def _apply_once(workspace: Path, subtask_id: str, key: str) -> bool:
    """Record the call and apply the effect unless its key is in the ledger; True if applied."""
    workspace.mkdir(parents=True, exist_ok=True)
    ledger = workspace / LEDGER
    with (workspace / LOCK).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _append_line(workspace / CALLS, f"{subtask_id} {key} {os.getpid()}")
        applied = ledger.exists() and any(
            line.split(" ", 1)[1] == key for line in ledger.read_text(encoding="utf-8").splitlines()
        )
        if applied:
            return False
        _append_line(ledger, f"{subtask_id} {key}")
        return True


@tool(tier="write_safe", timeout_s=10.0)
async def ledger_append(entry: str, context: ToolContext) -> str:
    """Append an entry to the shared ledger, once per idempotency key."""
    await asyncio.sleep(0.05)  # the call takes a moment, so kills land inside tool calls too
    applied = await asyncio.to_thread(
        _apply_once, context.workspace, context.subtask_id, context.idempotency_key
    )
    return f"{entry}: {'appended' if applied else 'already in the ledger'}"


@tool(tier="write_safe", timeout_s=30.0)
async def slow_append(seconds: float, context: ToolContext) -> str:
    """Append to the shared ledger after waiting `seconds`, once per idempotency key."""
    workspace = context.workspace
    workspace.mkdir(parents=True, exist_ok=True)
    _append_line(workspace / "entered", f"{context.idempotency_key} {os.getpid()}")
    await asyncio.sleep(seconds)
    applied = _apply_once(workspace, context.subtask_id, context.idempotency_key)
    return "appended" if applied else "already in the ledger"


@tool(tier="read", timeout_s=10.0)
def crash(context: ToolContext) -> str:
    """Crash the worker process running this call (for dead-letter tests)."""
    context.workspace.mkdir(parents=True, exist_ok=True)
    _append_line(context.workspace / "crashes", f"{context.idempotency_key} {os.getpid()}")
    os._exit(1)


@tool(tier="write_risky", timeout_s=30.0)
async def risky_apply(seconds: float, context: ToolContext) -> str:
    """Apply an effect once per idempotency key, then wait `seconds` before answering."""
    workspace = context.workspace
    applied = await asyncio.to_thread(
        _apply_once, workspace, context.subtask_id, context.idempotency_key
    )
    _append_line(workspace / "entered", f"{context.idempotency_key} {os.getpid()}")
    await asyncio.sleep(seconds)
    return "applied" if applied else "already applied"
