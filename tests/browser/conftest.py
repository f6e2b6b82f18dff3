"""Browser tests: the dashboard's page in a real headless Chromium, on the real services.

Everything is real and on this machine: one nats-server for all the browser tests, the
orchestrator, the agents and the knowledge store (`LocalStack`), the dashboard served by
uvicorn on a free loopback port (`DashboardServer`), and Debian's `chromium` driven through
the Python `playwright` package (`executable_path`: Playwright's own browser download does
not work here). Nothing is skipped: without Chromium or Playwright the tests fail and say how
to install them (`python3 dev.py test` installs Chromium with apt-get when it is missing).

Each test gets a fresh browser profile (user-data-dir under its tmp_path) and a `Tab` that
records every request the page makes: a request to any origin but the dashboard's fails the
test, and so does an uncaught error in the page or a Content-Security-Policy violation.

`HIVEBUS_SCREENSHOT_TO` (a PNG path) makes the screenshot test save a copy there too. It is
read when this module is imported, before the suite's hygiene removes every `HIVEBUS_*`
variable, so it works when the run starts here: `pytest tests/browser`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from hivetest import write_config

from hivebus.console.client import HiveClient
from hivebus.console.dashboard.server import DashboardServer
from hivebus.console.stack import LocalStack
from hivebus.core import EmbeddedNats, Settings, load_config

SCREENSHOT_TO = os.environ.get("HIVEBUS_SCREENSHOT_TO")
"""Where the screenshot test also saves its PNG (read at import: see the module docstring)."""

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Chromium's flags: headless, and none of its own traffic (updates, sync, field trials)."""

WAIT_MS = 15_000
"""Longest wait for something to appear in the page."""

TERMINAL = frozenset(
    {"completed", "partial", "failed", "timeout", "budget_exceeded", "cancelled", "rejected"}
)
"""Task statuses a task never leaves."""

EMAIL_TOOL = "hivebus.agent.tools.email:send_email"
WORKSPACE_TOOLS = [
    "hivebus.agent.tools.workspace:read_file",
    "hivebus.agent.tools.workspace:list_files",
]
ROLES: dict[str, dict[str, object]] = {
    "researcher": {
        "system": "You research one question.",
        "model": "scripted:scripts/answer.yaml",
        "tools": WORKSPACE_TOOLS,
        "tiers": ["read"],
        "limits": {"max_steps": 8, "max_tokens": 40000, "max_wall_s": 60, "max_tool_calls": 6},
        "allow_models": ["scripted:*"],
    },
    "writer": {
        "system": "You combine research into a recommendation.",
        "model": "scripted:scripts/answer.yaml",
        "tools": WORKSPACE_TOOLS,
        "tiers": ["read"],
        "limits": {"max_steps": 8, "max_tokens": 40000, "max_wall_s": 60, "max_tool_calls": 6},
        "allow_models": ["scripted:*"],
    },
    "assistant": {
        "system": "You answer customers; a person approves every email.",
        "model": "scripted:scripts/email.yaml",
        "tools": [EMAIL_TOOL],
        "tiers": ["read"],
        "approve": ["write_risky"],
        "approval_timeout_s": 300,
        "limits": {"max_steps": 6, "max_tokens": 20000, "max_wall_s": 300, "max_tool_calls": 2},
        "allow_models": ["scripted:*"],
    },
}
"""The roles of the browser tests' configuration."""

XSS = (
    "<script>window.__hivebusInjected = 1</script>"
    '<img src="/static/x.png" onerror="window.__hivebusInjected = 2"><b>bold?</b>'
)
"""A model answer that would run script if the page ever rendered output as HTML."""

SCRIPTS: dict[str, list[dict[str, Any]]] = {
    "answer.yaml": [
        {
            "text": "Bounded runs and visible failures matter more than the model.",
            "usage": {"input_tokens": 300, "output_tokens": 40},
        }
    ],
    "tech.yaml": [
        {
            "tool": "list_files",
            "args": {"path": "."},
            "usage": {"input_tokens": 250, "output_tokens": 20},
        },
        {
            "text": "JetStream gives durable work queues, explicit acks and KV compare-and-set.",
            "usage": {"input_tokens": 420, "output_tokens": 45},
        },
    ],
    "wrong-tool.yaml": [
        {
            "tool": "fetch_weather",
            "args": {"city": "Lisbon"},
            "usage": {"input_tokens": 310, "output_tokens": 25},
        },
        {
            "text": "Most incidents are loops and silent tool failures, not bad answers.",
            "usage": {"input_tokens": 480, "output_tokens": 50},
        },
    ],
    "stuck.yaml": [
        {
            "tool": "read_file",
            "args": {"path": "a.md"},
            "usage": {"input_tokens": 200, "output_tokens": 20},
        },
        {
            "tool": "read_file",
            "args": {"path": "b.md"},
            "usage": {"input_tokens": 240, "output_tokens": 20},
        },
        {
            "tool": "read_file",
            "args": {"path": "c.md"},
            "usage": {"input_tokens": 280, "output_tokens": 20},
        },
        {"text": "never reached"},
    ],
    "xss.yaml": [{"text": XSS, "usage": {"input_tokens": 100, "output_tokens": 30}}],
    "email.yaml": [
        {
            "tool": "send_email",
            "args": {
                "to": "ada@example.com",
                "subject": "Your refund R-1042 is on its way",
                "body": "Hello Ada, your refund was approved today.",
            },
            "usage": {"input_tokens": 380, "output_tokens": 90},
        },
        {
            "text": "I emailed Ada that her refund is on its way.",
            "usage": {"input_tokens": 520, "output_tokens": 40},
        },
    ],
}
"""Scripted models, written into the configuration's `scripts/` folder."""


def _sub(sub_id: str, role: str, script: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": sub_id,
        "role": role,
        "prompt": f"Do {sub_id}.",
        "model": f"scripted:scripts/{script}",
        **extra,
    }


def dag_plan(task_id: str) -> dict[str, Any]:
    """Three researchers (one meets a tool error, one gets stuck) and two dependents blocked."""
    return {
        "task_id": task_id,
        "goal": "Decide whether our support team should move its triage agents onto a bus.",
        "budget": {"max_tokens": 200000, "max_cost_usd": 1.0, "deadline_s": 300},
        "plan": {
            "subtasks": [
                _sub("research-market", "researcher", "wrong-tool.yaml"),
                _sub("research-tech", "researcher", "tech.yaml"),
                _sub(
                    "research-risks",
                    "researcher",
                    "stuck.yaml",
                    limits={
                        "max_steps": 3,
                        "max_tokens": 40000,
                        "max_wall_s": 60,
                        "max_tool_calls": 6,
                    },
                ),
                _sub(
                    "synthesis",
                    "writer",
                    "answer.yaml",
                    depends_on=["research-market", "research-tech", "research-risks"],
                ),
                _sub("review", "writer", "answer.yaml", depends_on=["synthesis"]),
            ]
        },
    }


def simple_plan(task_id: str, script: str = "answer.yaml") -> dict[str, Any]:
    """Two sub-tasks, the second depending on the first; both complete."""
    return {
        "task_id": task_id,
        "goal": f"A small task ({task_id}).",
        "plan": {
            "subtasks": [
                _sub("find", "researcher", script),
                _sub("write", "writer", "answer.yaml", depends_on=["find"]),
            ]
        },
    }


def approval_plan(task_id: str) -> dict[str, Any]:
    """One sub-task that asks a person before it sends an email."""
    return {
        "task_id": task_id,
        "goal": "Tell a customer their refund is on its way; a person approves the email first.",
        "plan": {"subtasks": [_sub("notify-customer", "assistant", "email.yaml")]},
    }


@dataclass
class Hive:
    """The running stack the browser tests use: the bus, the services, the dashboard."""

    settings: Settings
    url: str
    dashboard: DashboardServer
    client: HiveClient
    http: httpx.AsyncClient
    config_dir: Path

    @property
    def origin(self) -> str:
        """The dashboard's origin, e.g. `http://127.0.0.1:40123`."""
        return self.dashboard.url.rstrip("/")

    async def submit(self, plan: dict[str, Any]) -> str:
        """Submit a plan; return its task id once the dashboard knows the task."""
        task_id = await self.client.submit(plan)
        await self.wait_task(task_id, lambda _: True)
        return task_id

    async def task(self, task_id: str) -> dict[str, Any]:
        """The dashboard's TaskDetail of a task."""
        response = await self.http.get(f"/api/tasks/{task_id}")
        response.raise_for_status()
        found: dict[str, Any] = response.json()
        return found

    async def wait_task(
        self, task_id: str, done: Callable[[dict[str, Any]], bool], timeout_s: float = 30.0
    ) -> dict[str, Any]:
        """Poll the dashboard's API until `done(detail)` holds (bounded)."""
        async with asyncio.timeout(timeout_s):
            while True:
                response = await self.http.get(f"/api/tasks/{task_id}")
                if response.status_code == 200 and done(detail := response.json()):
                    return dict(detail)
                await asyncio.sleep(0.1)

    async def finished(self, task_id: str) -> dict[str, Any]:
        """Wait until the task ended; its TaskDetail."""
        return await self.wait_task(task_id, lambda d: d["status"] in TERMINAL)

    async def pending(self, task_id: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Wait until the task has a pending approval; the pending ones."""
        async with asyncio.timeout(timeout_s):
            while True:
                response = await self.http.get("/api/approvals", params={"task_id": task_id})
                if response.status_code == 200 and (found := response.json()["approvals"]):
                    return list(found)
                await asyncio.sleep(0.1)

    async def events(self, task_id: str) -> list[dict[str, Any]]:
        """Every EventRow of a task, as the dashboard serves them (only that task's)."""
        response = await self.http.get(f"/api/tasks/{task_id}/events")
        response.raise_for_status()
        rows: list[dict[str, Any]] = response.json()["events"]
        return [row for row in rows if row["event"]["task_id"] == task_id]


def _write_config(directory: Path) -> None:
    write_config(directory, ROLES)
    scripts = directory / "scripts"
    scripts.mkdir()
    for name, turns in SCRIPTS.items():
        (scripts / name).write_text(yaml.safe_dump(turns), encoding="utf-8")
    (directory / "workspace").mkdir()
    (directory / "workspace" / "a.md").write_text("# a\n", encoding="utf-8")


@pytest.fixture(scope="session")
async def hive(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hive]:
    """A real nats-server, the real services and the dashboard on a free loopback port."""
    root = tmp_path_factory.mktemp("browser-hive")
    config_dir = root / "config"
    _write_config(config_dir)
    config = load_config(config_dir / "hivebus.yaml")
    server = EmbeddedNats(root / "nats")
    await server.start()
    settings = Settings(
        nats_url=server.url,
        orchestrator_ack_wait_s=2.0,
        work_ack_wait_s=5.0,
        heartbeat_s=1.0,
        knowledge_dir=root / "knowledge",
    )
    try:
        async with (
            LocalStack(settings, config),
            DashboardServer(
                settings, server.url, host="127.0.0.1", port=0, keepalive_s=1.0
            ) as dash,
            HiveClient(server.url, settings) as client,
            httpx.AsyncClient(base_url=dash.url, timeout=10.0) as http,
        ):
            await dash.wait_ready(30.0)
            yield Hive(settings, server.url, dash, client, http, config_dir)
    finally:
        await server.stop()


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, or a failure that says how to install it (never a silent skip)."""
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("no `chromium` on PATH: run `apt-get install -y chromium` (dev.py test does)")
    return found


@pytest.fixture(scope="session")
async def playwright() -> AsyncIterator[Any]:
    """The Playwright driver (its Python package; browsers are not downloaded)."""
    try:
        from playwright.async_api import async_playwright  # noqa: PLC0415 - a clear failure
    except ImportError as exc:
        pytest.fail(f"the `playwright` package is missing ({exc}): run `python3 dev.py sync`")
    driver = await async_playwright().start()
    try:
        yield driver
    finally:
        await driver.stop()


@dataclass
class Tab:
    """One page in a fresh Chromium profile, with every request and page error recorded."""

    page: Any
    origin: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def open(self, route: str) -> None:
        """Load the dashboard at a hash route, e.g. `/tasks/t-1`."""
        await self.page.goto(f"{self.origin}/#{route}")

    def foreign(self) -> list[str]:
        """Requests to anything but the dashboard's own origin."""
        return [url for url in self.requests if _origin(url) != self.origin]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.fixture
async def tab(hive: Hive, chromium: str, playwright: Any, tmp_path: Path) -> AsyncIterator[Tab]:
    """A Chromium page on the dashboard; fails the test on foreign requests or page errors."""
    context = await playwright.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"),
        executable_path=chromium,
        args=CHROMIUM_ARGS,
        headless=True,
        viewport={"width": 1440, "height": 1000},
        service_workers="block",
    )
    page = context.pages[0] if context.pages else await context.new_page()
    page.set_default_timeout(WAIT_MS)
    made = Tab(page, hive.origin)
    context.on("request", lambda request: made.requests.append(request.url))
    page.on("pageerror", lambda error: made.errors.append(f"page error: {error}"))

    def on_console(message: Any) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            made.errors.append(f"CSP violation: {message.text}")

    page.on("console", on_console)
    try:
        yield made
    finally:
        await context.close()
    assert made.requests, "the page made no request at all"
    assert made.foreign() == [], f"the page reached another origin: {made.foreign()}"
    assert made.errors == [], made.errors
