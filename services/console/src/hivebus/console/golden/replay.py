"""`hivebus golden run`: one golden task through a local stack, judged by its expectations.

The stack is the real one (embedded nats-server, knowledge, orchestrator, every role's agent)
with the configuration of today, so a changed tool, validator, limit or prompt shows. Recorded
models replay each sub-task's turns under the route that answered it (so prices apply as
recorded); recorded tools answer each call the toolbox accepts from the recording, matched by
tool and arguments. The workspace is a temporary directory (seeded from the golden
directory's `workspace/`), as is the knowledge store.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hivebus.agent.models import Model
from hivebus.agent.models.scripted import ScriptedModel
from hivebus.agent.replay import ToolRunner
from hivebus.agent.tool import ToolContext
from hivebus.console.client import HiveClient
from hivebus.console.golden.expect import compare
from hivebus.console.golden.files import GoldenError, GoldenTask, RecordedCall
from hivebus.console.golden.observe import TaskRecord, read_task
from hivebus.console.stack import LocalStack
from hivebus.contracts import SubTaskAssigned, ToolErrorKind, ToolResult
from hivebus.core import ConfigError, HivebusConfig, Settings, load_config

DEFAULT_TIMEOUT_S = 300.0


class Source(StrEnum):
    """Where a replay's models or tools come from."""

    RECORDED = "recorded"
    LIVE = "live"


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


@dataclass
class GoldenReplay:
    """The `Replay` agents run with: recorded turns, and recorded tool answers when asked."""

    golden: GoldenTask
    models_source: Source
    tools_source: Source
    unrecorded: list[str] = field(default_factory=list)
    """Tool calls the replay made that the recording does not have."""
    _used: dict[str, set[int]] = field(default_factory=dict)

    def models(self, assignment: SubTaskAssigned) -> tuple[list[Model], list[str]] | None:
        """The sub-task's recorded turns as a scripted model (None: live models)."""
        if self.models_source is Source.LIVE:
            return None
        recorded = self.golden.subtasks.get(assignment.subtask_id)
        if recorded is None:
            known = ", ".join(self.golden.subtasks) or "none"
            problem = (
                "golden replay: the recording has no model turns for sub-task "
                f"{assignment.subtask_id!r} (it has: {known})"
            )
            return [], [problem]
        route = recorded.model or f"golden:{assignment.subtask_id}"
        return [ScriptedModel(route, recorded.script)], []

    def tool_runner(self, role: str) -> ToolRunner | None:  # noqa: ARG002 - one recording serves every role
        """Answers from the recording (None: the real tools run)."""
        return self.answer if self.tools_source is Source.RECORDED else None

    async def answer(self, name: str, args: Any, context: ToolContext) -> ToolResult:
        """The recorded result of the first unused call of `name` with these arguments."""
        recorded = self.golden.subtasks.get(context.subtask_id)
        calls: list[RecordedCall] = recorded.calls if recorded is not None else []
        used = self._used.setdefault(context.subtask_id, set())
        for index, call in enumerate(calls):
            if index not in used and call.tool == name and _same(call.args, args):
                used.add(index)
                return call.result
        made = f"{context.subtask_id}: {name}({json.dumps(args, default=str)[:200]})"
        self.unrecorded.append(made)
        return ToolResult.failure(
            ToolErrorKind.PERMANENT,
            f"golden replay: the recording has no call {name}"
            f"({json.dumps(args, default=str)[:200]}) for sub-task {context.subtask_id!r}",
            "replay with --tools live, or record the task again",
        )


@dataclass
class GoldenOutcome:
    """How one golden task's replay went."""

    name: str
    path: Path
    run: TaskRecord | None
    differences: list[str]

    @property
    def passed(self) -> bool:
        """True when the run met every expectation."""
        return not self.differences

    def as_json(self) -> dict[str, Any]:
        """What `--json` prints for this golden task."""
        return {
            "name": self.name,
            "path": str(self.path),
            "passed": self.passed,
            "task_id": self.run.task_id if self.run else None,
            "status": self.run.status if self.run else None,
            "differences": self.differences,
        }


def replay_config(golden: GoldenTask, override: Path | None, settings: Settings) -> HivebusConfig:
    """The configuration to replay with: `--config`, else golden.yaml's, else the default."""
    path = override or golden.config_path() or settings.config_file
    try:
        return load_config(path)
    except ConfigError as exc:
        raise GoldenError(f"{golden.path}: configuration error: {exc}") from exc


async def run_golden(
    golden: GoldenTask,
    *,
    settings: Settings,
    config: HivebusConfig,
    models: Source = Source.RECORDED,
    tools: Source = Source.LIVE,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> GoldenOutcome:
    """Replay `golden` on a stack of its own; judge the run against its expectations."""
    replay = GoldenReplay(golden, models, tools)
    with tempfile.TemporaryDirectory(prefix="hivebus-golden-") as scratch:
        workspace = Path(scratch) / "workspace"
        seed = golden.workspace()
        if seed is not None:
            shutil.copytree(seed, workspace, symlinks=True)
        else:
            workspace.mkdir()
        here = config.model_copy(update={"workspace": workspace})
        local = settings.model_copy(update={"nats_url": None, "knowledge_dir": None})
        body = dict(golden.body)
        try:
            async with (
                asyncio.timeout(timeout_s),
                LocalStack(local, here, data_dir=Path(scratch) / "data", replay=replay) as stack,
                HiveClient(stack.url, local) as client,
            ):
                task_id = await client.submit(body)
                run = await read_task(
                    client, task_id, idle_timeout_s=timeout_s, stop_at_approval=True
                )
        except TimeoutError:
            return GoldenOutcome(
                golden.name, golden.path, None, [f"task: did not finish within {timeout_s:g}s"]
            )
    differences = [str(d) for d in compare(golden.expected, run)]
    differences.extend(f"{call}: unrecorded tool call" for call in replay.unrecorded)
    if run.approvals:
        differences.append(
            f"task: asked a person for approval ({', '.join(run.approvals)}); "
            "a golden run has nobody to decide it"
        )
    return GoldenOutcome(golden.name, golden.path, run, differences)
