"""A run whose worker is SIGKILLed mid-tool and resumed by another: two run spans, one link.

Real processes: an orchestrator and two agents one after the other, exporting over OTLP/HTTP
to `OtlpReceiver`. The killed worker never exported its run span; the one that resumes the
run records it (failed, "interrupted") and links its own run span to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hivetest import HIVEBUS, process_env, provision_bus, write_config, write_script
from otlp_receiver import OtlpReceiver, ReceivedSpan

from hivebus.console.client import HiveClient
from hivebus.contracts import SubTaskStarted, TaskFinished, TaskStatus
from hivebus.core import Settings, telemetry

pytestmark = pytest.mark.e2e

E2E_DIR = Path(__file__).resolve().parent
TASK = "resumed-trace-1"


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `hivebus` child in its own session; SIGTERM (then SIGKILL) on the way out."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(HIVEBUS), *args], env=env, stdout=out, stderr=out, start_new_session=True
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL: nothing buffered is exported."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


async def spans_when(
    receiver: OtlpReceiver, runs: int, timeout_s: float = 30
) -> list[ReceivedSpan]:
    """Every span, once `runs` run spans of the task's trace and its workflow span arrived."""
    trace_id = f"{telemetry.trace_id_for(TASK):032x}"
    async with asyncio.timeout(timeout_s):
        while True:
            spans = [s for s in receiver.snapshot() if s.trace_id == trace_id]
            got = [s for s in spans if s.name.startswith("invoke_agent ")]
            if len(got) >= runs and any(s.name.startswith("invoke_workflow") for s in spans):
                return spans
            await asyncio.sleep(0.2)


async def test_a_killed_run_and_its_resumption_are_two_linked_spans(
    settings: Settings, tmp_path: Path
) -> None:
    """The resumed run's span links to the killed run's, which is recorded as interrupted."""
    script = [{"tool": "pause", "args": {"seconds": 4}}, {"text": "done"}]
    write_config(
        tmp_path,
        {
            "slow": {
                "system": "s",
                "model": write_script(tmp_path, "slow.yaml", script),
                "tools": ["slowtools:pause"],
            }
        },
    )
    await provision_bus(settings.nats_url or "", settings, ["slow"])
    with OtlpReceiver() as receiver:
        env = process_env(
            HIVEBUS_NATS_URL=settings.nats_url or "",
            HIVEBUS_WORK_ACK_WAIT_S="2",
            HIVEBUS_HEARTBEAT_S="0.5",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
            PYTHONPATH=str(E2E_DIR),
        )
        conf = ["--config", str(tmp_path / "hivebus.yaml")]
        logs = tmp_path / "logs"
        logs.mkdir()
        with process(["serve", "orchestrator", *conf], env, logs / "orchestrator.log"):
            async with HiveClient(settings.nats_url or "", settings) as client:
                plan = {"subtasks": [{"id": "s1", "role": "slow", "prompt": "wait"}]}
                await client.submit({"task_id": TASK, "goal": "wait", "plan": plan})
                events = client.follow(TASK)
                with process(
                    ["serve", "agent", "--role", "slow", *conf], env, logs / "a1.log"
                ) as a1:
                    async with asyncio.timeout(60):
                        async for _kind, event in events:
                            if isinstance(event, SubTaskStarted):
                                break
                    await asyncio.sleep(1.5)  # inside the 4 s tool call, after the model step
                    kill(a1)
                with process(["serve", "agent", "--role", "slow", *conf], env, logs / "a2.log"):
                    async with asyncio.timeout(90):
                        async for _kind, event in events:
                            if isinstance(event, TaskFinished):
                                assert event.status is TaskStatus.COMPLETED
                                break
                    spans = await spans_when(receiver, runs=2)

    runs = sorted(
        (s for s in spans if s.name == "invoke_agent slow"), key=lambda span: span.start_ns
    )
    assert len(runs) == 2, [(s.name, s.span_id) for s in runs]
    killed, resumed = runs
    assert killed.failed
    assert "interrupted" in killed.status_message
    assert (killed.trace_id, killed.span_id) in resumed.links
    assert resumed.parent_span_id == killed.parent_span_id  # both under the sub-task span
    assert not resumed.failed
