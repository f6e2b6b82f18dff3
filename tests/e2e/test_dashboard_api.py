"""The dashboard's JSON API against a real nats-server, the real services and real uvicorn.

Tasks are run by `LocalStack` with the demo's configurations and scripted models; the
dashboard is served on a free loopback port and read with httpx, its live stream included.
The 10,000-task list is fed by submissions and results published straight onto the streams
(cheap), read by the same consumers as real ones.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hivetest import provision_bus
from pydantic import SecretStr

from hivebus.console import demo as demo_assets
from hivebus.console.client import HiveClient, load_plan_file
from hivebus.console.dashboard import DashboardServer, create_app
from hivebus.console.dashboard.app import ROUTES
from hivebus.console.stack import LocalStack
from hivebus.contracts import (
    DeadLetter,
    Limits,
    SubTaskAssigned,
    SubTaskStatus,
    SubTaskSummary,
    TaskFinished,
    TaskStatus,
    Usage,
    subjects,
)
from hivebus.core import EmbeddedNats, HivebusConfig, Publisher, Settings, jetstream, load_config

pytestmark = pytest.mark.e2e

WAIT_S = 30.0
"""Bound on waiting for any one thing to happen."""

ASSETS = Path(demo_assets.__file__).parent
TRACE_URL = "http://traces.invalid/trace/{trace_id}"


def _demo_config(tmp_path: Path, name: str = "hivebus.yaml") -> HivebusConfig:
    config = load_config(ASSETS / name)
    return config.model_copy(update={"workspace": tmp_path / "workspace"})


@asynccontextmanager
async def _board(
    settings: Settings, **options: Any
) -> AsyncIterator[tuple[DashboardServer, httpx.AsyncClient]]:
    """The dashboard on a free loopback port, read by an httpx client."""
    url = settings.nats_url or ""
    async with DashboardServer(settings, url, host="127.0.0.1", port=0, **options) as board:
        await board.wait_ready(WAIT_S)
        async with httpx.AsyncClient(base_url=board.url, timeout=WAIT_S) as http:
            yield board, http


async def _row_when(http: httpx.AsyncClient, task_id: str, *, ended: bool = True) -> dict[str, Any]:
    """The task's row once the list has it (and, with `ended`, once it has its end)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        page = (await http.get("/api/tasks", params={"limit": 500})).json()
        for row in page["tasks"]:
            if row["task_id"] == task_id and (
                not ended or row["status"] not in {"submitted", "planning", "running"}
            ):
                return row
        await asyncio.sleep(0.05)
    pytest.fail(f"task {task_id} did not reach the list (ended={ended}) in {WAIT_S}s")


async def _run(client: HiveClient, body: dict[str, Any]) -> None:
    """Submit and follow to the end."""
    await client.submit(body)
    async for _ in client.follow(str(body["task_id"]), idle_timeout_s=WAIT_S):
        pass


async def test_list_detail_graph_and_events_of_a_finished_task(
    tmp_path: Path, settings: Settings
) -> None:
    """The failure demo: its row counts sub-tasks by status; its page has the DAG and root cause."""
    settings = settings.model_copy(update={"trace_url": TRACE_URL})
    async with (
        LocalStack(settings, _demo_config(tmp_path)),
        HiveClient(settings.nats_url or "", settings) as client,
        _board(settings) as (_, http),
    ):
        await _run(client, load_plan_file(ASSETS / "failure.yaml", "fail-1"))
        await _run(client, load_plan_file(ASSETS / "happy.yaml", "other-1"))  # events of another
        row = await _row_when(http, "fail-1")
        detail = (await http.get("/api/tasks/fail-1")).json()
        events = (await http.get("/api/tasks/fail-1/events")).json()
        rest = (await http.get("/api/tasks/fail-1/events", params={"after": events["last"]})).json()
        two = (await http.get("/api/tasks/fail-1/events", params={"limit": 2})).json()
    assert row["status"] == "partial"
    assert row["counts"] == {"blocked": 2, "budget_exceeded": 1, "completed": 2}
    assert row["subtasks"] == 5
    assert row["tokens"] > 0
    assert row["duration_s"] is not None
    assert row["duration_s"] >= 0
    assert detail["status"] == "partial"
    assert detail["degraded"] is True
    by_id = {s["id"]: s for s in detail["subtasks"]}
    assert by_id["research-risks"]["status"] == "budget_exceeded"
    assert "max_steps" in by_id["research-risks"]["reason"]
    blocked = [s for s in detail["subtasks"] if s["status"] == "blocked"]
    assert {s["blocked_by"] for s in blocked} == {"research-risks"}
    assert len(detail["trace_id"]) == 32
    assert detail["trace_url"] == TRACE_URL.replace("{trace_id}", detail["trace_id"])
    graph = detail["graph"]
    assert {n["id"] for n in graph["nodes"]} == set(by_id)
    pairs = {(e["from"], e["to"]) for e in graph["edges"]}
    assert pairs == {(d, s["id"]) for s in detail["subtasks"] for d in s["depends_on"]}
    nodes = {n["id"]: n for n in graph["nodes"]}
    for source, target in pairs:  # dependencies are drawn above what depends on them
        assert nodes[source]["y"] + nodes[source]["h"] <= nodes[target]["y"]
    assert all(n["x"] + n["w"] <= graph["width"] for n in graph["nodes"])
    seqs = [e["seq"] for e in events["events"]]
    assert seqs == sorted(seqs)
    assert events["last"] == seqs[-1]
    kinds = [e["kind"] for e in events["events"]]
    assert "task_finished" in kinds
    assert "step" in kinds
    assert all(e["event"]["task_id"] == "fail-1" for e in events["events"])
    assert rest == {"events": [], "last": events["last"]}
    assert [e["seq"] for e in two["events"]] == seqs[:2]


async def test_an_approval_decided_in_the_api_resumes_the_run_live_on_the_stream(
    tmp_path: Path, settings: Settings
) -> None:
    """Paused email: bad decisions are 400s, approve resumes it, SSE shows each event within 1s."""
    async with (
        LocalStack(settings, _demo_config(tmp_path, "hivebus-approval.yaml")),
        HiveClient(settings.nats_url or "", settings) as client,
        _board(settings) as (_, http),
    ):
        await client.submit(load_plan_file(ASSETS / "approval.yaml", "ap-task"))
        approvals: list[dict[str, Any]] = []
        deadline = time.monotonic() + WAIT_S
        while not approvals and time.monotonic() < deadline:
            approvals = (await http.get("/api/approvals")).json()["approvals"]
            await asyncio.sleep(0.05)
        [asked] = approvals
        assert (await http.get("/api/approvals", params={"task_id": "ap-task"})).json()[
            "approvals"
        ] == [asked]
        received: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        reader = asyncio.create_task(_read_stream(http, "/api/tasks/ap-task/stream", received))
        url = f"/api/approvals/{asked['approval_id']}"
        no_reason = await http.post(url, json={"decision": "reject"})
        bad_args = await http.post(url, json={"decision": "modify", "arguments": {"to": 3}})
        no_decision = await http.post(url, json={"by": "ada"})
        # Everything already stored comes first; then wait until the stream is live.
        await _until_kind(received, "approval_requested")
        decided = await http.post(url, json={"decision": "approve", "by": "ada", "reason": "ok"})
        live = await _until_kind(received, "task_finished")
        again = await http.post(url, json={"decision": "approve"})
        reader.cancel()
        detail = (await http.get("/api/tasks/ap-task")).json()
    assert asked["tool"] == "send_email"
    assert asked["tier"] == "write_risky"
    assert asked["kind"] == "tool_call"
    assert asked["arguments"]["to"] == "ada@example.com"
    assert asked["schema"]["type"] == "object"
    assert "approve" in asked["allowed_decisions"]
    assert no_reason.status_code == 400
    assert "reason" in no_reason.json()["error"]
    assert bad_args.status_code == 400
    assert bad_args.json()["error"].startswith("arguments:")
    assert no_decision.status_code == 400
    assert "decision" in no_decision.json()["error"]
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "resolved"
    assert again.status_code == 409
    assert again.json()["code"] == "already_decided"
    kinds = [row["kind"] for _, row in live]
    assert kinds[0] == "approval_resolved"
    assert "subtask_finished" in kinds
    assert detail["status"] == "completed"
    [approval] = detail["subtasks"][0]["approvals"]
    assert approval["by"] == "ada"


async def _read_stream(
    http: httpx.AsyncClient,
    path: str,
    into: asyncio.Queue[tuple[float, dict[str, Any]]],
    headers: dict[str, str] | None = None,
) -> None:
    """Put every SSE message of `path` into `into` with its arrival time (and comments as kind)."""
    async with http.stream("GET", path, headers=headers) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line.startswith(":"):
                await into.put((time.time(), {"kind": line[1:].strip(), "comment": True}))
            elif line == "" and "data" in fields:
                row = json.loads(fields["data"])
                assert fields["id"] == str(row["seq"])
                assert fields["event"] == row["kind"]
                await into.put((time.time(), row))
                fields = {}
            elif ":" in line:
                name, _, value = line.partition(":")
                fields[name] = value.strip()


async def _until_kind(
    queue: asyncio.Queue[tuple[float, dict[str, Any]]], kind: str
) -> list[tuple[float, dict[str, Any]]]:
    """Messages taken from `queue` up to and including the first of `kind` (comments left out)."""
    taken: list[tuple[float, dict[str, Any]]] = []
    async with asyncio.timeout(WAIT_S):
        while True:
            arrived, row = await queue.get()
            if row.get("comment"):
                if row["kind"] == kind:
                    return taken
                continue
            taken.append((arrived, row))
            if row["kind"] == kind:
                return taken


async def test_the_stream_resumes_after_last_event_id_and_keeps_alive(
    tmp_path: Path, settings: Settings
) -> None:
    """Reconnecting with Last-Event-ID sends only later events; a quiet stream gets keepalives."""
    async with (
        LocalStack(settings, _demo_config(tmp_path)),
        HiveClient(settings.nats_url or "", settings) as client,
        _board(settings, keepalive_s=0.2) as (_, http),
    ):
        await _run(client, load_plan_file(ASSETS / "happy.yaml", "happy-1"))
        await _row_when(http, "happy-1")
        events = (await http.get("/api/tasks/happy-1/events")).json()["events"]
        third = events[2]["seq"]
        received: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        reader = asyncio.create_task(
            _read_stream(
                http, "/api/tasks/happy-1/stream", received, headers={"Last-Event-ID": str(third)}
            )
        )
        replayed = await _until_kind(received, "keepalive")  # everything stored, then quiet
        reader.cancel()
        later = (await http.get("/api/tasks/happy-1/events", params={"after": third})).json()
    assert [row["seq"] for _, row in replayed] == [e["seq"] for e in later["events"]]
    assert later["events"][0]["seq"] == events[3]["seq"]


async def test_bad_input_gets_a_clear_error_naming_what_is_wrong(settings: Settings) -> None:
    """Unknown ids are 404s, bad parameters and bodies 400s, and POSTs must be small JSON."""
    await provision_bus(settings.nats_url or "", settings)
    async with _board(settings) as (_, http):
        answers = {
            "task": await http.get("/api/tasks/nobody"),
            "events": await http.get("/api/tasks/nobody/events"),
            "stream": await http.get("/api/tasks/nobody/stream"),
            "task_id": await http.get("/api/tasks/a.b"),
            "status": await http.get("/api/tasks", params={"status": "done"}),
            "limit": await http.get("/api/tasks", params={"limit": "0"}),
            "cursor": await http.get("/api/tasks", params={"cursor": "page-2"}),
            "after": await http.get("/api/tasks/x/events", params={"after": "soon"}),
            "dlq": await http.get("/api/dlq/7"),
            "dlq_seq": await http.get("/api/dlq/seven"),
            "since": await http.get("/api/stats", params={"since": "yesterday"}),
            "approval": await http.post("/api/approvals/ap-0", json={"decision": "approve"}),
            "decision": await http.post("/api/approvals/ap-0", json={"decision": "maybe"}),
            "form": await http.post("/api/approvals/ap-0", data={"decision": "approve"}),
            "large": await http.post(
                "/api/approvals/ap-0", json={"decision": "approve", "reason": "x" * 1_100_000}
            ),
            "not_json": await http.post(
                "/api/dlq/1/replay", content=b"{", headers={"content-type": "application/json"}
            ),
            "route": await http.get("/api/nothing"),
        }
    status = {name: answer.status_code for name, answer in answers.items()}
    error = {name: answer.json()["error"] for name, answer in answers.items()}
    assert status == {
        "task": 404,
        "events": 404,
        "stream": 404,
        "task_id": 400,
        "status": 400,
        "limit": 400,
        "cursor": 400,
        "after": 400,
        "dlq": 404,
        "dlq_seq": 400,
        "since": 400,
        "approval": 404,
        "decision": 400,
        "form": 415,
        "large": 413,
        "not_json": 400,
        "route": 404,
    }
    assert error["task"] == "no task nobody: nothing was submitted with that id"
    assert error["status"].startswith("status: 'done' is not one of")
    assert error["limit"] == "limit: 0 is not between 1 and 500"
    assert error["cursor"].startswith("cursor:")
    assert error["after"].startswith("after:")
    assert error["dlq"] == "no dead letter 7"
    assert error["since"].startswith("since:")
    assert "ap-0" in error["approval"]
    assert error["decision"].startswith("decision: Input should be 'approve'")
    assert "application/json" in error["form"]
    assert error["not_json"].startswith("the body is not JSON")


async def test_a_token_is_required_for_the_api_when_set(settings: Settings) -> None:
    """With HIVEBUS_DASHBOARD_TOKEN, /api needs it (header or ?token=); the page itself does not."""
    await provision_bus(settings.nats_url or "", settings)
    settings = settings.model_copy(update={"dashboard_token": SecretStr("s3cret-token")})
    async with _board(settings) as (_, http):
        bare = await http.get("/api/tasks")
        wrong = await http.get("/api/tasks", headers={"Authorization": "Bearer nope"})
        header = await http.get("/api/tasks", headers={"Authorization": "Bearer s3cret-token"})
        query = await http.get("/api/config", params={"token": "s3cret-token"})
        stream = await http.get("/api/tasks/x/stream")
        post = await http.post("/api/dlq/1/replay", json={})
        health = await http.get("/healthz")
        page = await http.get("/")
    assert bare.status_code == 401
    assert "HIVEBUS_DASHBOARD_TOKEN" in bare.json()["error"]
    assert bare.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 401
    assert stream.status_code == 401
    assert post.status_code == 401
    assert header.status_code == 200
    assert query.json() == {"trace_url": None, "token_required": True, "decisions_allowed": True}
    assert "s3cret" not in query.text
    assert health.status_code == 200
    assert page.status_code in {200, 503}  # 503 only while the page files are not written
    assert "default-src 'self'" in page.headers["content-security-policy"]


async def test_off_loopback_without_a_token_reads_work_and_decisions_are_refused(
    settings: Settings,
) -> None:
    """Served as on 0.0.0.0: GETs answer, every POST is 403 naming the token; a token allows."""
    await provision_bus(settings.nats_url or "", settings)
    url = settings.nats_url or ""
    answers = []
    for token in (None, "t0ken"):
        app = create_app(
            settings.model_copy(update={"dashboard_token": SecretStr(token) if token else None}),
            url,
            host="0.0.0.0",  # noqa: S104 - the rule under test; nothing listens there
        )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://dash", headers=headers
            ) as http,
        ):
            await app.state.dashboard.ready.wait()
            answers.append(
                (
                    await http.get("/api/config"),
                    await http.get("/api/tasks"),
                    await http.post("/api/dlq/1/replay", json={"from_checkpoint": False}),
                )
            )
    (config, tasks, replay), (_, _, allowed) = answers
    assert config.json()["decisions_allowed"] is False
    assert tasks.status_code == 200
    assert replay.status_code == 403
    assert replay.json()["error"] == (
        "decisions and replays need HIVEBUS_DASHBOARD_TOKEN when the dashboard listens on 0.0.0.0"
    )
    assert allowed.status_code == 404  # past the guard: there is no dead letter 1


async def test_dead_letters_list_show_and_replay(tmp_path: Path, settings: Settings) -> None:
    """A real dead letter (a submission naming no task) and a dead sub-task: list, show, replay."""
    async with (
        LocalStack(settings, _demo_config(tmp_path)),
        HiveClient(settings.nats_url or "", settings) as client,
        _board(settings) as (_, http),
    ):
        js = await jetstream(client.broker)
        await js.publish(subjects.SUBMIT, b'{"goal": "nobody answers this"}')
        assignment = SubTaskAssigned(
            task_id="lost",
            subtask_id="research-market",
            role="researcher",
            goal="find the market",
            prompt="What is the market for event buses?",
            limits=Limits(),
            model="scripted:scripts/research-market.yaml",
        )
        await Publisher(client.broker, 5.0).publish(
            DeadLetter(
                task_id="lost",
                subtask_id="research-market",
                why="max_deliveries",
                deliveries=5,
                original=assignment.model_dump(mode="json"),
                errors=["worker died", "worker died again"],
            )
        )
        entries: list[dict[str, Any]] = []
        deadline = time.monotonic() + WAIT_S
        while len(entries) < 2 and time.monotonic() < deadline:
            entries = (await http.get("/api/dlq")).json()["entries"]
            await asyncio.sleep(0.05)
        by_task = {e["task_id"]: e for e in entries}
        lost = by_task["lost"]
        shown = (await http.get(f"/api/dlq/{lost['seq']}")).json()
        [unnamed] = [e for e in entries if e["task_id"] != "lost"]
        refused = await http.post(f"/api/dlq/{unnamed['seq']}/replay", json={})
        replayed = await http.post(
            f"/api/dlq/{lost['seq']}/replay", json={"from_checkpoint": False}
        )
        new_task = replayed.json()["task_id"]
        row = await _row_when(http, new_task)
    assert lost["why"] == "max_deliveries"
    assert lost["subtask_id"] == "research-market"
    assert lost["errors"] == ["worker died", "worker died again"]
    assert lost["deliveries"] == 5
    assert shown["seq"] == lost["seq"]
    assert shown["original"]["prompt"] == assignment.prompt
    assert unnamed["why"] == "unrecoverable"
    assert refused.status_code == 409
    assert "cannot be replayed" in refused.json()["error"]
    assert replayed.status_code == 200
    assert new_task == f"lost-replay-{lost['seq']}"
    assert row["status"] == "completed"


async def test_openapi_documents_every_route_and_stats_answer(
    tmp_path: Path, settings: Settings
) -> None:
    """/api/openapi.json has every route with its method; /api/stats is the stats JSON."""
    async with (
        LocalStack(settings, _demo_config(tmp_path)),
        HiveClient(settings.nats_url or "", settings) as client,
        _board(settings) as (_, http),
    ):
        await _run(client, load_plan_file(ASSETS / "happy.yaml", "stats-1"))
        document = (await http.get("/api/openapi.json")).json()
        stats = (await http.get("/api/stats", params={"since": "1h", "by": "role"})).json()
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    routed = {(r.path, m.lower()) for r in ROUTES for m in (r.methods or ()) if m != "HEAD"}
    assert routed == documented
    assert stats["by"] == "role"
    assert {row["key"] for row in stats["rows"]} >= {"researcher", "writer"}


TASKS_IN_STREAM = 10_000
SHM = Path("/dev/shm")  # noqa: S108 - a private directory is made inside it


@pytest.fixture
async def memory_settings(tmp_path: Path) -> AsyncIterator[Settings]:
    """A nats-server of its own storing in memory-backed /dev/shm where there is one.

    Its `sync_interval: always` makes each of the 12,500 synthetic publishes an fsync, which a
    disk turns into a quarter of a minute; durability is not what this test is about.
    """
    shm = SHM if SHM.is_dir() else tmp_path  # noqa: ASYNC240 - one stat, before the server
    with tempfile.TemporaryDirectory(dir=shm) as store:
        async with EmbeddedNats(Path(store)) as server:
            yield Settings(nats_url=server.url)


async def test_ten_thousand_tasks_page_newest_first(memory_settings: Settings) -> None:
    """10,000 submissions on TASKS: paged newest first, none repeats, filters count right."""
    settings = memory_settings
    await provision_bus(settings.nats_url or "", settings)
    async with HiveClient(settings.nats_url or "", settings) as client:
        js = await jetstream(client.broker)
        for start in range(0, TASKS_IN_STREAM, 1000):
            await asyncio.gather(*(_publish_task(js, n) for n in range(start, start + 1000)))
        async with _board(settings) as (_, http):
            seen: list[str] = []
            cursor = None
            while True:
                page = (
                    await http.get("/api/tasks", params={"limit": 500, "cursor": cursor or ""})
                ).json()
                seen.extend(row["task_id"] for row in page["tasks"])
                if page["next"] is None:
                    break
                cursor = page["next"]
                if len(seen) == 500:
                    await _publish_task(js, TASKS_IN_STREAM)
                    await _row_when(http, f"bulk-{TASKS_IN_STREAM}", ended=False)
            done = (await http.get("/api/tasks", params={"status": "completed"})).json()
            running = (await http.get("/api/tasks", params={"status": "running"})).json()
    assert seen == [f"bulk-{n}" for n in reversed(range(TASKS_IN_STREAM))]
    assert done["total"] == TASKS_IN_STREAM // 4
    assert done["tasks"][0]["counts"] == {"completed": 1}
    assert running["total"] == TASKS_IN_STREAM + 1 - TASKS_IN_STREAM // 4


async def _publish_task(js: Any, n: int) -> None:
    task_id = f"bulk-{n}"
    body = {"task_id": task_id, "goal": f"task {n}", "plan": {"subtasks": [{"id": "a"}]}}
    await js.publish(
        subjects.SUBMIT,
        json.dumps(body).encode(),
        stream=subjects.TASKS_STREAM,
        headers={subjects.MSG_ID_HEADER: task_id},
    )
    if n % 4 == 0 and n < TASKS_IN_STREAM:
        finished = TaskFinished(
            task_id=task_id,
            status=TaskStatus.COMPLETED,
            reason="done",
            usage=Usage(input_tokens=10, output_tokens=5),
            subtasks=[SubTaskSummary(id="a", role="r", status=SubTaskStatus.COMPLETED)],
            ts=datetime.now(UTC),
        )
        await js.publish(
            subjects.event(task_id, subjects.EventKind.TASK_FINISHED),
            finished.model_dump_json().encode(),
            stream=subjects.EVENTS_STREAM,
        )
