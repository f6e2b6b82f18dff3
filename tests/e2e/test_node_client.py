"""The Node.js client in `examples/clients/node` against a real bus, as a restricted identity.

The bus runs with the shipped identities (`LocalStack(secure=True)`): every service as its
own identity and the client as `client`, so a test passes only if the `client` identity's
permissions are enough for a client written from the contracts alone. The client's packages
are installed once with `npm ci` from its committed lock; the install is skipped while
`node_modules` matches the lock.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import nats
import pytest
from hivetest import REPO, process_env, write_config, write_script

from hivebus.console.stack import LocalStack
from hivebus.contracts import StepRecorded, TaskSubmitted
from hivebus.core import Settings

pytestmark = pytest.mark.e2e

CLIENT_DIR = REPO / "examples" / "clients" / "node"
INSTALL_STAMP = CLIENT_DIR / "node_modules" / ".hivebus-installed"
"""Holds the digest of package.json and package-lock.json that `npm ci` last installed."""

ANSWER = "Limits stop runaway agents."
RUN_TIMEOUT_S = 20.0
"""Bound on one run of the client (its own `--timeout` is shorter)."""


def _lock_digest() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((CLIENT_DIR / name).read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def node() -> str:
    """The `node` executable, with the client's packages installed from the lock (once)."""
    found = shutil.which("node")
    npm = shutil.which("npm")
    if found is None or npm is None:
        pytest.fail(
            "the Node.js client tests need `node` (20 or newer) and `npm` on PATH: "
            "install Node.js, e.g. `apt-get install nodejs npm`"
        )
    digest = _lock_digest()
    if not INSTALL_STAMP.exists() or INSTALL_STAMP.read_text(encoding="utf-8") != digest:
        # `npm ci` installs exactly the lock and never changes it (`npm install` could).
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=CLIENT_DIR,
            env=process_env(NPM_CONFIG_UPDATE_NOTIFIER="false"),
            capture_output=True,
            text=True,
            timeout=100,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"`npm ci` in {CLIENT_DIR} failed:\n{done.stdout}\n{done.stderr}")
        INSTALL_STAMP.write_text(digest, encoding="utf-8")
    return found


@pytest.fixture
def secure_bus(tmp_path: Path) -> LocalStack:
    """The services (one role, `writer`, with a scripted model) on the shipped identities."""
    return _stack(tmp_path)


def _stack(tmp_path: Path, *, services: bool = True) -> LocalStack:
    model = write_script(tmp_path, "writer.yaml", [{"text": ANSWER}])
    config = write_config(tmp_path / "config", {"writer": {"system": "You write.", "model": model}})
    settings = Settings(orchestrator_ack_wait_s=2.0, work_ack_wait_s=5.0, heartbeat_s=1.0)
    return LocalStack(settings, config, services=services, secure=True)


def client_env(stack: LocalStack) -> dict[str, str]:
    """The Node client's environment: connect as `client` (inbox prefix by default)."""
    assert stack.identities is not None
    return process_env(
        HIVEBUS_NATS_URL=stack.url,
        HIVEBUS_NATS_USER="client",
        HIVEBUS_NATS_PASSWORD=stack.identities.passwords["client"],
    )


@dataclass(frozen=True)
class Run:
    """What one run of the client did."""

    code: int
    stdout: str
    stderr: str


async def _client(node: str, env: dict[str, str], *args: str) -> Run:
    proc = await asyncio.create_subprocess_exec(
        node,
        str(CLIENT_DIR / "submit.mjs"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(RUN_TIMEOUT_S):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def test_a_task_submitted_from_node_completes(node: str, secure_bus: LocalStack) -> None:
    """The client submits, prints each event of the task in order, its output, and exits 0."""
    async with secure_bus as stack:
        run = await _client(
            node,
            client_env(stack),
            *("--goal", "Explain agent limits.", "--subtask", "writer:Say why limits matter."),
            *("--task-id", "node-done", "--timeout", "15"),
        )
    assert run.code == 0, run.stdout + run.stderr
    kinds = [line.split(" ")[1] for line in run.stdout.splitlines() if line.startswith("[node-")]
    assert kinds == ["subtask_started:", "step:", "subtask_finished:", "task_finished:"]
    assert "[node-done] task_finished: finished completed" in run.stdout
    assert f'"writer-1": "{ANSWER}"' in run.stdout


async def test_a_rejected_task_exits_non_zero_with_the_reason(
    node: str, secure_bus: LocalStack
) -> None:
    """A plan naming an unknown role ends in `task_rejected`: exit 8, the reason on stderr."""
    async with secure_bus as stack:
        run = await _client(
            node,
            client_env(stack),
            *("--goal", "Haunt the bus.", "--subtask", "ghost", "--task-id", "node-rejected"),
        )
    assert run.code == 8, run.stdout + run.stderr
    assert "task node-rejected was rejected" in run.stderr
    assert "unknown role 'ghost'" in run.stderr


async def test_a_long_event_history_is_followed_to_the_end(
    node: str, secure_bus: LocalStack
) -> None:
    """Megabytes of events stall delivery until the client answers flow control; it does."""
    task_id = "node-long"
    async with secure_bus as stack:
        assert stack.identities is not None
        hive = await nats.connect(
            stack.url,
            user="agent-writer",  # step events are what agents publish
            password=stack.identities.passwords["agent-writer"],
            inbox_prefix="_INBOX_agent-writer",
        )
        try:
            js = hive.jetstream()
            # 4 MB: without an answer to its flow-control requests, nats-server 2.15 stops
            # delivering to the client's push consumer after 2 to 3 MB.
            for step in range(1, 21):
                padding = StepRecorded(
                    task_id=task_id,
                    subtask_id="padding",
                    attempt=1,
                    run_id="padding",
                    step=step,
                    step_kind="model",
                    name="padding",
                    output="x" * 200_000,
                )
                await js.publish(f"hive.events.{task_id}.step", padding.model_dump_json().encode())
        finally:
            await hive.close()
        run = await _client(
            node,
            client_env(stack),
            *("--goal", "Go on.", "--subtask", "writer", "--task-id", task_id, "--timeout", "15"),
        )
    assert run.code == 0, run.stdout + run.stderr
    assert run.stdout.count(f"[{task_id}] step: padding step") == 20
    assert "[node-long] task_finished: finished completed" in run.stdout


async def test_no_end_in_time_exits_with_a_clear_message(node: str, tmp_path: Path) -> None:
    """With no orchestrator to answer, the client gives up after `--timeout` and says so."""
    async with _stack(tmp_path, services=False) as stack:
        run = await _client(
            node,
            client_env(stack),
            *("--goal", "Wait.", "--subtask", "writer", "--task-id", "node-late", "--timeout", "1"),
        )
    assert run.code == 10, run.stdout + run.stderr
    assert "submitted task node-late" in run.stdout
    assert "task node-late did not end within 1 s" in run.stderr


async def test_the_message_is_valid_against_the_schema(node: str) -> None:
    """`--dry-run` prints a TaskSubmitted valid against its JSON Schema and the Python model."""
    run = await _client(
        node,
        process_env(),
        *("--goal", "Learn.", "--subtask", "writer", "--subtask", "writer:Again."),
        *("--plan", str(CLIENT_DIR / "plan.json"), "--dry-run"),
    )
    assert run.code == 0, run.stderr
    message = json.loads(run.stdout)
    schema = json.loads((REPO / "contracts" / "schemas" / "TaskSubmitted.json").read_text())
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(message)
    submitted = TaskSubmitted.model_validate(message)
    assert submitted.plan is not None
    ids = [s.id for s in submitted.plan.subtasks]
    assert ids == ["writer-1", "writer-2", "find-a", "find-b", "summary"]
    assert submitted.plan.subtasks[1].prompt == "Again."


async def test_an_inbox_outside_the_permissions_is_explained(node: str, tmp_path: Path) -> None:
    """An inbox prefix the identity may not subscribe to fails at once, saying what to check."""
    async with _stack(tmp_path, services=False) as stack:
        env = {**client_env(stack), "HIVEBUS_NATS_INBOX_PREFIX": "_INBOX"}
        run = await _client(
            node, env, "--goal", "Try.", "--subtask", "writer", "--task-id", "node-x"
        )
    assert run.code == 1, run.stdout + run.stderr
    assert 'Permissions Violation for Subscription to "_INBOX.' in run.stderr
    assert "HIVEBUS_NATS_INBOX_PREFIX" in run.stderr
    assert "submitted" not in run.stdout
