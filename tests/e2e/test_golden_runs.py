"""Golden runs: the demo's tasks recorded from a real stack, replayed through a real one."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from hivebus.console import demo as demo_assets
from hivebus.console.client import HiveClient, load_plan_file
from hivebus.console.golden.files import GoldenError, load_golden
from hivebus.console.golden.observe import read_task
from hivebus.console.golden.record import record_task
from hivebus.console.golden.replay import GoldenOutcome, Source, replay_config, run_golden
from hivebus.console.stack import LocalStack
from hivebus.core import Settings, load_config

DEMO = Path(demo_assets.__file__).parent
HIVEBUS = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "hivebus"


@pytest.fixture(scope="module")
async def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo's happy and failure tasks, run on a local stack and recorded."""
    root = tmp_path_factory.mktemp("golden")
    settings = Settings(nats_url=None)
    config = load_config(DEMO / "hivebus.yaml")
    dirs: dict[str, Path] = {}
    async with (
        LocalStack(settings, config, data_dir=root / "data") as stack,
        HiveClient(stack.url, settings) as client,
    ):
        for scenario in ("happy", "failure"):
            task_id = await client.submit(load_plan_file(DEMO / f"{scenario}.yaml"))
            await read_task(client, task_id, idle_timeout_s=60)
            dirs[scenario] = root / scenario
            await record_task(client, task_id, dirs[scenario], config=DEMO / "hivebus.yaml")
        with pytest.raises(GoldenError, match="there is no task 't-nosuch'"):
            await record_task(client, "t-nosuch", root / "none", config=None)
        with pytest.raises(GoldenError, match="is not empty"):
            await record_task(client, task_id, dirs["failure"], config=None)
    return dirs


async def replay(
    path: Path, config: Path | None = None, *, tools: Source = Source.LIVE
) -> GoldenOutcome:
    """Replay the golden directory `path` (with another configuration when given)."""
    settings = Settings(nats_url=None)
    golden = load_golden(path)
    return await run_golden(
        golden,
        settings=settings,
        config=replay_config(golden, config, settings),
        tools=tools,
        timeout_s=60,
    )


def changed_demo(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the demo's configuration, changed by `change`; returns its hivebus.yaml."""
    copy = tmp_path / "demo"
    shutil.copytree(DEMO, copy, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    path = copy / "hivebus.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("tools", [Source.LIVE, Source.RECORDED])
@pytest.mark.parametrize("scenario", ["happy", "failure"])
async def test_recorded_demo_task_replays_to_the_same_outcome(
    recorded: dict[str, Path], scenario: str, tools: Source
) -> None:
    """Recorded happy and failure tasks replay with no difference, tools live or recorded."""
    outcome = await replay(recorded[scenario], tools=tools)
    assert outcome.differences == []
    assert outcome.run is not None
    assert outcome.run.status == ("completed" if scenario == "happy" else "partial")
    expect = yaml.safe_load((recorded[scenario] / "expect.yaml").read_text(encoding="utf-8"))
    assert expect["task"]["status"] == outcome.run.status


async def test_a_tighter_role_limit_is_named_in_the_diff(
    recorded: dict[str, Path], tmp_path: Path
) -> None:
    """A researcher allowed 2 steps instead of 8: its sub-tasks' status and steps differ."""
    config = changed_demo(
        tmp_path, lambda data: data["roles"]["researcher"]["limits"].update(max_steps=2)
    )
    outcome = await replay(recorded["happy"], config)
    assert not outcome.passed
    assert "research-market: status: expected 'completed', got 'budget_exceeded'" in (
        outcome.differences
    )
    assert any(
        d.startswith("research-market: steps: expected '3', got '2'") for d in outcome.differences
    )


BROKEN_TOOL = '''
from hivebus.agent.tool import tool

@tool(tier="write_safe")
def kb_write(path: str, title: str, body: str, expected_revision: str = "new") -> str:
    """Write a note (this one always fails)."""
    raise RuntimeError("the disk is full")
'''

SHOUTING_VALIDATOR = """
from hivebus.agent.validators import ValidationResult

def shout(output, context):
    return ValidationResult(output=str(output).upper(), flags=("shouted",))
"""


async def test_a_changed_tool_is_named_in_the_diff(
    recorded: dict[str, Path], tmp_path: Path
) -> None:
    """A kb_write that now fails shows in the tool sequence of each sub-task that calls it."""

    def change(data: dict[str, Any]) -> None:
        data["python_paths"] = ["extra"]
        tools = data["roles"]["researcher"]["tools"]
        tools[tools.index("hivebus.agent.tools.knowledge:kb_write")] = "brokentools:kb_write"

    config = changed_demo(tmp_path, change)
    (config.parent / "extra").mkdir()
    (config.parent / "extra" / "brokentools.py").write_text(BROKEN_TOOL, encoding="utf-8")
    outcome = await replay(recorded["happy"], config)
    assert not outcome.passed
    assert (
        "research-market: tools: expected '[\"kb_write\"]', got '[\"kb_write (permanent)\"]'"
        in outcome.differences
    )


async def test_a_changed_validator_is_named_in_the_diff(
    recorded: dict[str, Path], tmp_path: Path
) -> None:
    """A validator that rewrites the writer's output: output and flags differ."""

    def change(data: dict[str, Any]) -> None:
        data["python_paths"] = ["extra"]
        data["roles"]["writer"]["validators"] = ["shouting:shout"]

    config = changed_demo(tmp_path, change)
    (config.parent / "extra").mkdir()
    (config.parent / "extra" / "shouting.py").write_text(SHOUTING_VALIDATOR, encoding="utf-8")
    outcome = await replay(recorded["happy"], config)
    fields = {d.split(": ")[1] for d in outcome.differences if d.startswith("synthesis: ")}
    assert fields == {"output", "flags"}
    assert any("got 'RECOMMENDATION: MOVE" in d for d in outcome.differences)


def edit_yaml(path: Path, change: Callable[[Any], Any]) -> None:
    """Rewrite the YAML file at `path` with `change` applied."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    path.write_text(yaml.safe_dump(change(data) or data), encoding="utf-8")


async def test_loosened_expectations_pass_a_run_that_differs_within_them(
    recorded: dict[str, Path], tmp_path: Path
) -> None:
    """A different final text fails the exact output, and passes a pattern and ranges."""
    golden = tmp_path / "happy"
    shutil.copytree(recorded["happy"], golden)
    edit_yaml(golden / "golden.yaml", lambda d: d.update(config=str(DEMO / "hivebus.yaml")))

    def shorter(turns: list[dict[str, Any]]) -> None:
        turns[-1].update(
            text="Recommendation: pilot one queue.",
            usage={"input_tokens": 1100, "output_tokens": 9},
        )

    edit_yaml(golden / "models" / "synthesis.yaml", shorter)
    exact = await replay(golden)
    assert {d.split(": ")[1] for d in exact.differences} == {"output", "tokens"}

    def loosen(expect: dict[str, Any]) -> None:
        expect["subtasks"]["synthesis"].update(
            output={"pattern": "^Recommendation: "}, tokens={"min": 1000, "max": 4000}
        )

    edit_yaml(golden / "expect.yaml", loosen)
    assert (await replay(golden)).differences == []


def hostile(golden: Path, case: str) -> None:
    """Damage a copy of a golden directory in one way."""
    if case == "escaping id":
        edit_yaml(
            golden / "golden.yaml", lambda d: d["subtasks"].update({"../../x": {"role": "writer"}})
        )
    elif case == "symlinked models":
        (golden / "models" / "review.yaml").unlink()
        (golden / "models" / "review.yaml").symlink_to("/etc/hostname")
    elif case == "bad pattern":
        edit_yaml(golden / "expect.yaml", lambda d: d["task"].update(reason={"pattern": "("}))
    elif case == "bad range":
        edit_yaml(golden / "expect.yaml", lambda d: d["task"].update(status={"min": "x"}))
    elif case == "not a script":
        (golden / "models" / "review.yaml").write_text("just: text\n", encoding="utf-8")
    elif case == "bad tool result":
        (golden / "tools" / "review.yaml").write_text(
            "- {tool: kb_read, result: 3}\n", encoding="utf-8"
        )
    elif case == "not yaml":
        (golden / "golden.yaml").write_text("format: [1\n", encoding="utf-8")
    elif case == "future format":
        edit_yaml(golden / "golden.yaml", lambda d: d.update(format=9))
    elif case == "no task":
        (golden / "task.yaml").unlink()


HOSTILE = {
    "escaping id": "cannot name a file",
    "symlinked models": "resolves outside the golden directory",
    "bad pattern": "`pattern` is not a regular expression",
    "bad range": "`min` must be a number",
    "not a script": "a mapping must be {cases",
    "bad tool result": "call 1: result",
    "not yaml": "is not valid YAML",
    "future format": "format 9 is not 1",
    "no task": "cannot read plan",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_or_corrupt_golden_files_get_a_clear_error(
    recorded: dict[str, Path], tmp_path: Path, case: str
) -> None:
    """Each kind of damage is a `GoldenError` naming what is wrong."""
    golden = tmp_path / "g"
    shutil.copytree(recorded["happy"], golden)
    hostile(golden, case)
    with pytest.raises(GoldenError, match=None) as caught:
        load_golden(golden)
    assert HOSTILE[case] in str(caught.value)


def test_golden_run_command_exits_2_on_a_corrupt_golden_and_0_on_the_examples(
    recorded: dict[str, Path], tmp_path: Path
) -> None:
    """The command says what is wrong (exit 2); the committed examples pass (exit 0)."""
    golden = tmp_path / "g"
    shutil.copytree(recorded["happy"], golden)
    hostile(golden, "bad pattern")
    bad = subprocess.run(
        [HIVEBUS, "golden", "run", str(golden)], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2
    assert "`pattern` is not a regular expression" in bad.stderr
    examples = Path(__file__).resolve().parents[2] / "examples" / "golden"
    good = subprocess.run(
        [HIVEBUS, "golden", "run", str(examples), "--tools", "recorded", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    assert '"passed": true' in good.stdout


async def live_replay(golden: Path, config: Path) -> GoldenOutcome:
    """Replay `golden` with live models: the fake Anthropic server gives two fixed answers."""
    from fake_anthropic import FakeAnthropic, text  # noqa: PLC0415 - a test helper beside this file

    with FakeAnthropic() as fake:
        fake.queue(
            text("Recommendation: adopt the bus, one queue first.", 700, 20),
            text("Verdict: sound; watch the cost per ticket.", 600, 15),
        )
        settings = Settings(
            nats_url=None, anthropic_api_key="test-key", anthropic_base_url=fake.url
        )
        loaded = load_golden(golden)
        outcome = await run_golden(
            loaded,
            settings=settings,
            config=replay_config(loaded, config, settings),
            models=Source.LIVE,
            timeout_s=60,
        )
        assert len(fake.requests) == 2
    return outcome


async def test_models_live_against_the_fake_anthropic_server_judged_by_tolerances(
    recorded: dict[str, Path], tmp_path: Path
) -> None:
    """With writer and reviewer on Claude (the fake server), loosened expectations pass."""

    def change(data: dict[str, Any]) -> None:
        for role in ("writer", "reviewer"):
            data["roles"][role]["model"] = "anthropic:claude-test"
            data["roles"][role]["allow_models"] = ["scripted:*", "anthropic:*"]

    config = changed_demo(tmp_path, change)
    golden = tmp_path / "happy"
    shutil.copytree(recorded["happy"], golden)
    exact = await live_replay(golden, config)
    assert {d.split(": ")[0] for d in exact.differences} == {"synthesis", "review"}

    def loosen(expect: dict[str, Any]) -> None:
        for subtask_id, pattern in (("synthesis", "^Recommendation: "), ("review", "^Verdict: ")):
            fields = expect["subtasks"][subtask_id]
            fields.update(output={"pattern": pattern}, steps={"min": 1, "max": 6})
            fields.update(tokens={"max": 5000}, cost_usd={"max": 0.05})
            del fields["tools"]

    edit_yaml(golden / "expect.yaml", loosen)
    assert (await live_replay(golden, config)).differences == []
