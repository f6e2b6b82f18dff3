"""A golden directory: what `hivebus golden record` writes and `hivebus golden run` reads.

    golden.yaml       format, where it was recorded from, the configuration (relative to this
                      directory) and each sub-task's role and model route
    task.yaml         the submission, as a plan file (`hivebus run` takes it too)
    models/ID.yaml    the sub-task's model turns: a scripted model (text, tool calls, usage,
                      and `after`, what each turn answered)
    tools/ID.yaml     the sub-task's tool calls as they were: `[{tool, args, result}, ...]`
    expect.yaml       the expected outcome, meant to be edited (`hivebus.console.golden.expect`)
    workspace/        (optional) copied into the replay's temporary workspace

Everything read is checked: a file that is missing, not YAML, of the wrong shape, or a
sub-task id that would name a path outside the directory, is a `GoldenError` naming the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hivebus.agent.errors import ScriptError
from hivebus.agent.models.scripted import Script, parse_script
from hivebus.console.client import PlanFileError, load_plan_file
from hivebus.console.golden.expect import ExpectationError, parse_expectations
from hivebus.contracts import ToolResult, describe_validation_error
from hivebus.core.yamlfile import load_yaml

FORMAT = 1
GOLDEN_FILE = "golden.yaml"
TASK_FILE = "task.yaml"
EXPECT_FILE = "expect.yaml"
WORKSPACE_DIR = "workspace"
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


class GoldenError(Exception):
    """A golden directory that cannot be recorded to or replayed: says which file and why."""


class RecordedSubTask(BaseModel):
    """What golden.yaml says of one sub-task."""

    model_config = ConfigDict(extra="forbid")

    role: str = Field(min_length=1)
    model: str | None = Field(default=None, description="The route that answered its run.")


class GoldenIndex(BaseModel):
    """golden.yaml."""

    model_config = ConfigDict(extra="forbid")

    format: int = Field(description="The directory's format version.")
    name: str = Field(min_length=1)
    recorded_from: str = Field(description="The task id the recording was made from.")
    recorded_at: str
    config: str | None = Field(
        default=None, description="The configuration the replay uses, relative to this directory."
    )
    subtasks: dict[str, RecordedSubTask] = Field(default_factory=dict)


class RecordedCall(BaseModel):
    """One tool call as it was made and answered."""

    model_config = ConfigDict(extra="forbid")

    tool: str = Field(min_length=1)
    args: Any = None
    result: ToolResult


@dataclass
class GoldenSubTask:
    """A sub-task's recording: its role, route, model turns and tool calls."""

    role: str
    model: str | None
    script: Script
    calls: list[RecordedCall]


@dataclass
class GoldenTask:
    """A golden directory, read and checked."""

    path: Path
    index: GoldenIndex
    body: dict[str, Any]
    expected: dict[str, Any]
    subtasks: dict[str, GoldenSubTask] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The golden task's name (its directory's, when recorded)."""
        return self.index.name

    def config_path(self) -> Path | None:
        """The configuration golden.yaml names, resolved against this directory."""
        return None if self.index.config is None else (self.path / self.index.config).resolve()

    def workspace(self) -> Path | None:
        """The workspace to seed the replay's with, when the directory has one."""
        seed = self.path / WORKSPACE_DIR
        return seed if seed.is_dir() else None


def safe_id(subtask_id: str, where: str) -> str:
    """`subtask_id` when it can name a file here; a `GoldenError` otherwise."""
    if not SAFE_ID.match(subtask_id):
        raise GoldenError(
            f"{where}: sub-task id {subtask_id!r} cannot name a file (letters, digits, '-' "
            "and '_' only)"
        )
    return subtask_id


def _inside(root: Path, relative: str) -> Path:
    """`root / relative`, refusing anything (a symlink, say) that resolves outside `root`."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise GoldenError(f"{root / relative} resolves outside the golden directory ({path})")
    return path


def _yaml(path: Path) -> Any:
    return load_yaml(path, what="golden file", error=GoldenError)


def _model(model: type[BaseModel], data: Any, where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise GoldenError(
            f"{where}: " + "; ".join(describe_validation_error(exc, "entry"))
        ) from exc


def _calls(path: Path) -> list[RecordedCall]:
    if not path.exists():
        return []
    data = _yaml(path)
    if data is None:
        return []
    if not isinstance(data, list):
        raise GoldenError(f"{path}: must be a list of recorded calls `{{tool, args, result}}`")
    return [_model(RecordedCall, entry, f"{path}, call {n}") for n, entry in enumerate(data, 1)]


def _subtask(root: Path, subtask_id: str, recorded: RecordedSubTask) -> GoldenSubTask:
    where = f"{root / GOLDEN_FILE}"
    name = safe_id(subtask_id, where)
    models = _inside(root, f"models/{name}.yaml")
    try:
        script = parse_script(_yaml(models), str(models))
    except ScriptError as exc:
        raise GoldenError(str(exc)) from exc
    return GoldenSubTask(
        recorded.role, recorded.model, script, _calls(_inside(root, f"tools/{name}.yaml"))
    )


def load_golden(path: Path) -> GoldenTask:
    """Read and check the golden directory at `path`."""
    if not path.is_dir():
        raise GoldenError(f"{path} is not a directory (a golden task is one)")
    index_file = path / GOLDEN_FILE
    if not index_file.exists():
        raise GoldenError(f"{path} has no {GOLDEN_FILE}: record one with `hivebus golden record`")
    index: GoldenIndex = _model(GoldenIndex, _yaml(index_file), str(index_file))
    if index.format != FORMAT:
        raise GoldenError(f"{index_file}: format {index.format} is not {FORMAT}, the one known")
    try:
        body = load_plan_file(_inside(path, TASK_FILE))
    except PlanFileError as exc:
        raise GoldenError(str(exc)) from exc
    expect_file = _inside(path, EXPECT_FILE)
    try:
        expected = parse_expectations(_yaml(expect_file), str(expect_file))
    except ExpectationError as exc:
        raise GoldenError(str(exc)) from exc
    golden = GoldenTask(path=path, index=index, body=body, expected=expected)
    for subtask_id, recorded in index.subtasks.items():
        golden.subtasks[subtask_id] = _subtask(path, subtask_id, recorded)
    return golden


def golden_dirs(paths: list[Path]) -> list[Path]:
    """Each path that is a golden directory, else the golden directories right inside it."""
    found: list[Path] = []
    for path in paths:
        if (path / GOLDEN_FILE).exists():
            found.append(path)
            continue
        inside = (
            sorted(p for p in path.iterdir() if (p / GOLDEN_FILE).exists()) if path.is_dir() else []
        )
        if not inside:
            raise GoldenError(f"{path} is not a golden directory and holds none")
        found.extend(inside)
    return found
