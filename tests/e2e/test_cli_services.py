"""`hivebus up` as a long-running process, driven by `submit`, `watch` and `status`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hivetest import HIVEBUS, REPO, process_env

from hivebus.core.embedded import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def hive_up(tmp_path: Path) -> Iterator[dict[str, str]]:
    """`hivebus up` on an external nats-server started here; yields the client environment."""
    from hivebus.core.embedded import nats_server_binary, server_config  # noqa: PLC0415

    port = free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(server_config(port, tmp_path / "js"), encoding="utf-8")
    server = subprocess.Popen(
        [str(nats_server_binary()), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = process_env(HIVEBUS_NATS_URL=f"nats://127.0.0.1:{port}")
    up = subprocess.Popen(
        [str(HIVEBUS), "up", "--config", str(REPO / "hivebus.yaml")],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert up.stderr is not None
        deadline = time.monotonic() + 30
        for line in up.stderr:  # wait for the observable "is up" line, not for time
            if "hivebus is up" in line or time.monotonic() > deadline:
                break
        yield env
    finally:
        os.killpg(up.pid, signal.SIGINT)
        up.wait(timeout=20)
        server.terminate()
        server.wait(timeout=10)


def test_submit_wait_watch_and_status(hive_up: dict[str, str]) -> None:
    """A plan submitted to `hivebus up` completes; watch and status report the same end."""
    plan = str(REPO / "examples" / "plan.yaml")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(HIVEBUS), *args],
            env=hive_up,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    waited = cli("submit", plan, "--task-id", "cli-1", "--wait", "--json")
    assert waited.returncode == 0, waited.stderr
    finished = json.loads(waited.stdout.strip().splitlines()[-1])
    assert finished["status"] == "completed"

    watched = cli("watch", "cli-1", "--json")
    assert watched.returncode == 0
    assert json.loads(watched.stdout.strip().splitlines()[-1])["event_id"] == finished["event_id"]

    status = cli("status", "cli-1", "--json")
    assert status.returncode == 0
    state = json.loads(status.stdout)
    assert state["status"] == "completed"
    assert [s["status"] for s in state["subtasks"]] == ["completed"] * 3

    missing = cli("status", "no-such-task")
    assert missing.returncode == 1

    history = cli("kb", "log")
    assert history.returncode == 0, history.stderr
    assert "knowledge" in history.stdout
    note = cli("kb", "show", "readme.md")
    assert note.returncode == 0, note.stderr
    bad = cli("kb", "show", "../etc/passwd.md")
    assert bad.returncode == 1


def test_asyncapi_documents_the_services() -> None:
    """`hivebus asyncapi` prints an AsyncAPI document naming each service's channels."""
    for service in ("orchestrator", "agent"):
        done = subprocess.run(
            [str(HIVEBUS), "asyncapi", service, "--config", str(REPO / "hivebus.yaml")],
            env=process_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        spec = json.loads(done.stdout)
        assert spec["asyncapi"].startswith("3.")
        assert spec["channels"]
