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
- `wait_gate`: returns once the test has opened a gate (`open_gate`), so a test decides
  when a sub-task may finish.

`Ledger` reads back what the ledger tools wrote.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from hivebus.agent import ToolContext, tool

LEDGER = "ledger"
"""One line per applied effect: `<subtask_id> <idempotency_key>`."""
CALLS = "calls"
"""One line per invocation: `<subtask_id> <idempotency_key> <pid>`."""
LOCK = "ledger.lock"
"""The file whose `flock` serialises the ledger's check-and-append across processes."""
GATES = "gates"
"""The workspace directory of open gates: one empty file per gate, named after it."""
GATE_POLL_S = 0.1


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


@tool(tier="read", timeout_s=300.0)
async def wait_gate(gate: str, context: ToolContext) -> str:
    """Wait until the gate named `gate` is open, then say so (bounded by the tool's timeout)."""
    opened = context.workspace / GATES / gate
    while not opened.exists():  # noqa: ASYNC110 - another process opens it: nothing to await
        await asyncio.sleep(GATE_POLL_S)
    return f"gate {gate} is open"


def open_gate(workspace: Path, gate: str) -> None:
    """Open a gate: every `wait_gate` for it returns."""
    (workspace / GATES).mkdir(parents=True, exist_ok=True)
    (workspace / GATES / gate).touch()


@dataclass
class Ledger:
    """What the ledger and the call log say about the writes."""

    keys: Counter[str]
    keys_per_subtask: Counter[str]
    calls: int
    call_keys: int

    @classmethod
    def read(cls, workspace: Path) -> Ledger:
        """Read both files of the shared workspace."""
        ledger = [line.split(" ") for line in (workspace / LEDGER).read_text().splitlines()]
        calls = [line.split(" ") for line in (workspace / CALLS).read_text().splitlines()]
        return cls(
            keys=Counter(key for _, key in ledger),
            keys_per_subtask=Counter(sid for sid, _ in ledger),
            calls=len(calls),
            call_keys=len({key for _, key, _ in calls}),
        )

    @property
    def duplicated_effects(self) -> int:
        """Effects applied more than once for one key."""
        return sum(self.keys.values()) - len(self.keys)

    @property
    def reexecuted(self) -> int:
        """Tool invocations that repeated an earlier invocation's key."""
        return self.calls - self.call_keys
