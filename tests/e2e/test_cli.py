"""The `hivebus` command as a user runs it: real processes, real embedded nats-server."""

from __future__ import annotations

import json
import subprocess

import pytest
from hivetest import HIVEBUS, REPO, process_env

pytestmark = pytest.mark.e2e


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HIVEBUS), "demo", "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=process_env(),
        check=False,
    )


def test_demo_happy_completes_and_prints_task_finished_json() -> None:
    """`hivebus demo --json` exits 0 and its last stdout line is a completed `TaskFinished`."""
    done = _demo()
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["kind"] == "task_finished"
    assert result["status"] == "completed"
    assert set(result["usage"]) >= {"input_tokens", "output_tokens", "cost_usd", "steps"}
    assert {"tool_calls", "wall_s"} <= set(result["usage"])
    assert [s["id"] for s in result["subtasks"]] == [
        "research-market",
        "research-tech",
        "research-risks",
        "synthesis",
        "review",
    ]
    for sub in result["subtasks"]:
        assert {"id", "role", "status", "reason", "blocked_by", "usage", "output"} <= set(sub)
    assert "scripted models" in done.stderr


def test_demo_failure_blocks_dependents_and_exits_partial() -> None:
    """The failure scenario ends `partial` (exit 3): one researcher over its step limit."""
    done = _demo("--scenario", "failure")
    assert done.returncode == 3, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    by_id = {s["id"]: s for s in result["subtasks"]}
    assert result["status"] == "partial"
    assert by_id["research-risks"]["status"] == "budget_exceeded"
    assert "max_steps" in by_id["research-risks"]["reason"]
    assert by_id["synthesis"]["status"] == "blocked"
    assert by_id["review"]["status"] == "blocked"
    assert by_id["review"]["blocked_by"] == "research-risks"


def test_run_with_unreadable_plan_is_a_usage_error() -> None:
    """`hivebus run` on a missing plan file exits 2 with a message, not a traceback."""
    done = subprocess.run(
        [str(HIVEBUS), "run", "/nonexistent/plan.yaml", "--config", str(REPO / "hivebus.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        env=process_env(),
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
