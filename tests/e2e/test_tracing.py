"""One trace per task across real service processes, exported over OTLP/HTTP to a real receiver.

The orchestrator, the knowledge service and one agent process per role each run `hivebus
serve ...` with `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at `OtlpReceiver`; the test decodes
what arrived (`opentelemetry-proto`) and checks the tree: workflow > sub-task > run > steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hivetest import HIVEBUS, REPO, process_env, provision_bus
from otlp_receiver import OtlpReceiver, ReceivedSpan

from hivebus.console.client import HiveClient
from hivebus.console.options import plan_or_exit
from hivebus.contracts import TaskFinished, TaskStatus, subjects
from hivebus.core import Settings, jetstream, new_broker, telemetry

pytestmark = pytest.mark.e2e

CONFIG = REPO / "hivebus.yaml"
PLAN = REPO / "examples" / "plan.yaml"
SERVICES = (
    ("orchestrator",),
    ("knowledge",),
    ("agent", "--role", "researcher"),
    ("agent", "--role", "writer"),
)
EXPORT_WAIT_S = 30.0


class Services:
    """`hivebus serve` processes, each in its own session, stopped with SIGTERM on the way out."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        """Nothing runs until `start`."""
        self.env = env
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """Start `hivebus serve <args>`."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{'-'.join(args)}-{len(self.processes)}.log").open("wb") as out:
            proc = subprocess.Popen(
                [str(HIVEBUS), "serve", *args, "--config", str(CONFIG)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(proc)
        return proc

    def stop(self) -> None:
        """SIGTERM every process (they export what they buffered), then wait."""
        for proc in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextlib.contextmanager
def running(env: dict[str, str], logs: Path) -> Iterator[Services]:
    """Every service of the demo configuration as its own process."""
    services = Services(env, logs)
    try:
        for args in SERVICES:
            services.start(*args)
        yield services
    finally:
        services.stop()


async def run_plan(
    settings: Settings, task_id: str, traceparent: str | None = None
) -> TaskFinished:
    """Submit the example plan (the bus provisioned first) and wait for its `TaskFinished`."""
    await provision_bus(settings.nats_url or "", settings, ["researcher", "writer"])
    async with HiveClient(settings.nats_url or "", settings) as client:
        await client.submit(plan_or_exit(PLAN, task_id), traceparent)
        async with asyncio.timeout(120):
            async for _kind, event in client.follow(task_id):
                if isinstance(event, TaskFinished):
                    return event
    raise AssertionError("the task's events ended without a TaskFinished")


def by_name(spans: list[ReceivedSpan], prefix: str) -> list[ReceivedSpan]:
    """The spans whose name starts with `prefix`."""
    return [s for s in spans if s.name.startswith(prefix)]


async def wait_for_spans(receiver: OtlpReceiver, names: list[str]) -> list[ReceivedSpan]:
    """Every span received once one span of each name prefix in `names` has arrived."""
    deadline = time.monotonic() + EXPORT_WAIT_S
    while time.monotonic() < deadline:
        spans = receiver.snapshot()
        if all(by_name(spans, name) for name in names):
            return spans
        await asyncio.sleep(0.2)
    got = sorted({s.name for s in receiver.snapshot()})
    raise AssertionError(f"spans {names} did not all arrive within {EXPORT_WAIT_S}s; got {got}")


def env_for(settings: Settings, tmp_path: Path, **otel: str) -> dict[str, str]:
    """The environment of every service process: the server, the knowledge dir, `otel`."""
    return process_env(
        HIVEBUS_NATS_URL=settings.nats_url or "",
        HIVEBUS_KNOWLEDGE_DIR=str(tmp_path / "knowledge"),
        HIVEBUS_LOG_LEVEL="info",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_METRIC_EXPORT_INTERVAL="500",
        **otel,
    )


async def test_one_trace_across_processes(settings: Settings, tmp_path: Path) -> None:
    """A task run by four processes arrives as one trace: workflow > sub-task > run > steps.

    Each span comes from the service that did the work, with the GenAI convention attributes.
    """
    with OtlpReceiver() as receiver:
        env = env_for(settings, tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
        with running(env, tmp_path / "logs"):
            finished = await run_plan(settings, "traced-1")
            assert finished.status is TaskStatus.COMPLETED
            spans = await wait_for_spans(
                receiver, ["invoke_workflow", "subtask summary", "knowledge.write", "chat"]
            )
        metric_names = set(receiver.metric_names)

    workflow = by_name(spans, "invoke_workflow traced-1")
    assert len(workflow) == 1
    root = workflow[0]
    trace_id = f"{telemetry.trace_id_for('traced-1'):032x}"
    assert root.trace_id == trace_id
    assert root.service == "hivebus-orchestrator"
    assert root.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert root.attributes["hivebus.task.status"] == "completed"
    assert not [key for key in root.attributes if key.startswith("gen_ai.usage")]

    task_spans = [s for s in spans if s.trace_id == trace_id]
    ids = {s.span_id: s for s in task_spans}
    subtasks = by_name(task_spans, "subtask ")
    assert {s.name for s in subtasks} == {"subtask find-a", "subtask find-b", "subtask summary"}
    assert all(s.parent_span_id == root.span_id for s in subtasks)

    runs = by_name(task_spans, "invoke_agent ")
    assert {s.service for s in runs} == {"hivebus-agent"}
    assert {s.attributes["gen_ai.agent.name"] for s in runs} == {"researcher", "writer"}
    for run in runs:
        assert ids[run.parent_span_id].name.startswith("subtask ")
        assert not [key for key in run.attributes if key.startswith("gen_ai.usage")]
    chats = by_name(task_spans, "chat ")
    assert chats
    for chat in chats:
        assert ids[chat.parent_span_id].name.startswith("invoke_agent ")
        assert chat.attributes["gen_ai.operation.name"] == "chat"
        assert chat.attributes["gen_ai.provider.name"]
        assert "gen_ai.system" not in chat.attributes
        assert "gen_ai.usage.input_tokens" in chat.attributes
        assert "gen_ai.input.messages" not in chat.attributes  # content is off by default
    tools = by_name(task_spans, "execute_tool ")
    assert tools
    assert all(ids[t.parent_span_id].name.startswith("invoke_agent ") for t in tools)
    assert all(t.attributes["gen_ai.tool.name"] for t in tools)
    waits = by_name(task_spans, "queue_wait ")
    assert waits
    assert all(ids[w.parent_span_id].name.startswith("subtask ") for w in waits)
    writes = by_name(task_spans, "knowledge.write")
    assert {s.service for s in writes} == {"hivebus-knowledge"}

    services = {s.service for s in task_spans}
    assert services == {"hivebus-orchestrator", "hivebus-agent", "hivebus-knowledge"}
    assert {"gen_ai.client.token.usage", "hivebus.subtask.outcomes"} <= metric_names


async def test_submission_traceparent_is_continued(settings: Settings, tmp_path: Path) -> None:
    """A submission carrying a client's `traceparent` joins the client's trace, under its span."""
    client_trace, client_span = 0x1234 << 64 | 0xABCD, 0x42
    with OtlpReceiver() as receiver:
        env = env_for(settings, tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
        with running(env, tmp_path / "logs"):
            await run_plan(settings, "traced-2", telemetry.traceparent(client_trace, client_span))
            spans = await wait_for_spans(receiver, ["invoke_workflow traced-2"])
    root = by_name(spans, "invoke_workflow traced-2")[0]
    assert root.trace_id == f"{client_trace:032x}"
    assert root.parent_span_id == f"{client_span:016x}"
    assert by_name([s for s in spans if s.trace_id == root.trace_id], "subtask ")


async def test_no_exporter_means_nothing_leaves(settings: Settings, tmp_path: Path) -> None:
    """Without `OTEL_EXPORTER_OTLP_ENDPOINT` nothing is exported.

    No message carries a trace context either: tracing does no work at all.
    """
    with OtlpReceiver() as receiver:
        env = env_for(settings, tmp_path, OTEL_SERVICE_NAME="nobody")
        with running(env, tmp_path / "logs"):
            finished = await run_plan(settings, "untraced-1")
            assert finished.status is TaskStatus.COMPLETED
        assert receiver.requests == 0

    broker = new_broker(settings.nats_url or "", "test-reader", settings)
    try:
        js = await jetstream(broker)
        sub = await js.subscribe(subjects.events_of("untraced-1"), ordered_consumer=True)
        try:
            while True:
                msg = await sub.next_msg(timeout=5)
                assert telemetry.TRACEPARENT not in (msg.headers or {}), msg.subject
                if msg.metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
    finally:
        await broker.stop()


def test_demo_exports_a_trace_per_task_from_every_service(tmp_path: Path) -> None:
    """`OTEL_EXPORTER_OTLP_ENDPOINT=... hivebus demo` exports every service's spans.

    The services share one process, yet each exports under its own name, every agent role
    with its `hivebus.role`.
    """
    with OtlpReceiver() as receiver:
        env = process_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
        demo = subprocess.run(
            [str(HIVEBUS), "demo"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert demo.returncode == 0, demo.stderr[-2000:]
        spans = receiver.snapshot()
    workflows = by_name(spans, "invoke_workflow ")
    assert workflows
    for root in workflows:
        in_trace = [s for s in spans if s.trace_id == root.trace_id]
        assert {s.service for s in in_trace} >= {"hivebus-orchestrator", "hivebus-agent"}
    roles = {s.resource.get("hivebus.role") for s in spans if s.service == "hivebus-agent"}
    assert roles >= {"researcher", "writer", "reviewer"}
    assert "hivebus-knowledge" in {s.service for s in spans}
