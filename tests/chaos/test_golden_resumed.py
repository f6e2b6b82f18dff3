"""A golden recording of a task whose run was resumed after its worker was SIGKILLed."""

from __future__ import annotations

from pathlib import Path

from hivetest import write_config, write_script
from process_fleet import Fleet, chaos_settings, read_events, wait_until

from hivebus.console.client import HiveClient
from hivebus.console.golden.files import load_golden
from hivebus.console.golden.observe import read_task
from hivebus.console.golden.record import record_task
from hivebus.console.golden.replay import Source, replay_config, run_golden
from hivebus.console.stack import provision_all
from hivebus.core import EmbeddedNats, Settings, jetstream

ROLE = "researcher"
USAGE = {"input_tokens": 100, "output_tokens": 10}


async def test_a_recording_of_a_resumed_run_replays_to_the_same_outcome(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    """Killed while its second model call is in flight, the run resumes; its golden replays."""
    model = write_script(
        tmp_path,
        "slow.yaml",
        [
            {"tool": "list_files", "args": {}, "usage": USAGE},
            {"text": "two files", "usage": USAGE, "delay_s": 4},
        ],
    )
    role = {
        "system": "s",
        "model": model,
        "tools": ["hivebus.agent.tools.workspace:list_files"],
        "tiers": ["read"],
    }
    config = write_config(tmp_path, {ROLE: role})
    config.workspace_dir().mkdir(exist_ok=True)
    settings = chaos_settings(nats_server.url)
    await provision_all(nats_server.url, settings, [ROLE])
    body = {
        "task_id": "resumed",
        "goal": "g",
        "plan": {"subtasks": [{"id": "look", "role": ROLE, "prompt": "p"}]},
    }
    with Fleet(tmp_path / "hivebus.yaml", settings, tmp_path / "logs") as fleet:
        fleet.orchestrator()
        worker = fleet.agent(ROLE)
        async with HiveClient(nats_server.url, settings) as client:
            js = await jetstream(client.broker)
            await client.submit(body)

            async def tool_step_recorded() -> bool:
                events = await read_events(js, "resumed")
                return any(kind == "step" and e["step"] == 2 for kind, e in events)

            await wait_until(tool_step_recorded, "the tool step", 60)
            fleet.kill(worker)
            second = fleet.agent(ROLE)
            original = await read_task(client, "resumed", idle_timeout_s=60)
            assert "run_resumed" in fleet.log(second)
            await record_task(
                client, "resumed", tmp_path / "golden", config=tmp_path / "hivebus.yaml"
            )
    assert original.status == "completed"
    assert original.subtasks["look"].steps == 3
    golden = load_golden(tmp_path / "golden")
    local = Settings(nats_url=None)
    for tools in (Source.LIVE, Source.RECORDED):
        outcome = await run_golden(
            golden,
            settings=local,
            config=replay_config(golden, None, local),
            tools=tools,
            timeout_s=60,
        )
        assert outcome.differences == []
