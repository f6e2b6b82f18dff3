"""docker-compose.yml, wired as written: every service as a local process, one task end to end.

The static tests (test_deploy_files.py) check the files' shape; this one checks that what they
say works together: the commands exist, each identity may do what its service does, the
environment and mounted files are the ones the services read, `provision` creates everything
the others need, health checks pass, a task submitted as `client` completes and the dashboard
answers with its token. See `compose_processes` for how a service becomes a process.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from compose_processes import LocalCompose
from deployfiles import COMPOSE, env_example, hivebus_services, load
from hivetest import HIVEBUS, REPO, process_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

NOT_SET = frozenset({"ANTHROPIC_API_KEY", "OTEL_EXPORTER_OTLP_ENDPOINT", "HIVEBUS_TRACE_URL"})
"""Left unset, as in a fresh .env: no model key (the sample's models are scripted), no telemetry."""


def dot_env_values() -> dict[str, str]:
    """A .env as `.env.example` says to make one: a fresh random value for each placeholder."""
    values = {}
    for name, value in env_example().items():
        if name in NOT_SET or name == "COMPOSE_PROFILES":
            continue
        values[name] = "hb" + secrets.token_hex(24) if value == "replace-me" else value
    return values


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[LocalCompose, dict[str, str]]]:
    """docker-compose.yml ready to start with a fresh .env; stopped (SIGTERM) after the test."""
    values = dot_env_values()
    stack = LocalCompose(load(COMPOSE, env=values), tmp_path)
    try:
        yield stack, values
    finally:
        codes = stack.stop()
    stopped_badly = {name: code for name, code in codes.items() if code not in {0, None}}
    assert not stopped_badly, f"not a clean stop on SIGTERM: {stopped_badly}"


def up(stack: LocalCompose) -> None:
    """Start every service in dependency order; wait until the workers pass their HEALTHCHECK."""
    stack.up()
    for name in hivebus_services(stack.compose):
        if name not in {"provision", "dashboard"}:
            stack.wait_healthy(name)  # the image's HEALTHCHECK: `hivebus health`


def client(stack: LocalCompose, values: dict[str, str], user: str, *args: str) -> dict[str, object]:
    """Run `hivebus ARGS` on this host as `user` (the way README's Deploy section says)."""
    done = subprocess.run(
        [str(HIVEBUS), *args, "--json"],
        env=process_env(
            HIVEBUS_NATS_URL=f"nats://127.0.0.1:{stack.port('nats', 4222)}",
            HIVEBUS_NATS_USER=user,
            HIVEBUS_NATS_PASSWORD=values[f"HIVEBUS_PASSWORD_{user.upper()}"],
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def dashboard(stack: LocalCompose, path: str, token: str | None) -> tuple[int, bytes]:
    """GET the dashboard's `path` on its published port, with a bearer token when given."""
    request = urllib.request.Request(f"http://127.0.0.1:{stack.port('dashboard', 8700)}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
            return answer.status, answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()


def test_a_task_runs_through_the_compose_services(
    stack: tuple[LocalCompose, dict[str, str]], tmp_path: Path
) -> None:
    """A plan and a goal-only task submitted as `client` complete; the dashboard shows them."""
    services, values = stack
    up(services)
    planned = client(
        services,
        values,
        "client",
        "submit",
        str(REPO / "examples" / "plan.yaml"),
        "--task-id",
        "compose-plan",
        "--wait",
    )
    assert planned["status"] == "completed", planned
    goal = tmp_path / "goal.yaml"
    goal.write_text(
        yaml.safe_dump(
            {"goal": "Say what makes a deployment reliable.", "budget": {"max_tokens": 200000}}
        ),
        encoding="utf-8",
    )
    from_goal = client(
        services, values, "client", "submit", str(goal), "--task-id", "compose-goal", "--wait"
    )
    assert from_goal["status"] == "completed", from_goal
    assert from_goal["planning"]["source"] == "planned"  # agent-planner made the plan
    assert {s["role"] for s in from_goal["subtasks"]} >= {"researcher", "writer"}

    services.wait_healthy("dashboard")  # its feed has read the streams
    assert dashboard(services, "/healthz", None)[0] == 200
    assert dashboard(services, "/api/tasks", None)[0] == 401
    status, body = dashboard(services, "/api/tasks", values["HIVEBUS_DASHBOARD_TOKEN"])
    assert status == 200
    assert {"compose-plan", "compose-goal"} <= {row["task_id"] for row in json.loads(body)["tasks"]}
