"""The dashboard on the shipped identities: it reads as `dashboard`, decides as `approver`."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_dashboard_api import ASSETS, WAIT_S, _board, _demo_config, _row_when

from hivebus.console.client import HiveClient, load_plan_file
from hivebus.console.stack import LocalStack
from hivebus.core import Settings

pytestmark = pytest.mark.e2e


async def _asked(http: httpx.AsyncClient) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        approvals = (await http.get("/api/approvals")).json()["approvals"]
        if approvals:
            return dict(approvals[0])
        await asyncio.sleep(0.05)
    pytest.fail(f"no approval was asked for in {WAIT_S}s")


async def test_a_secured_dashboard_reads_as_itself_and_decides_as_the_approver(
    tmp_path: Path,
) -> None:
    """Without the approver's credentials a decision is not published; with them it resolves."""
    config = _demo_config(tmp_path, "hivebus-approval.yaml")
    async with LocalStack(Settings(), config, data_dir=tmp_path / "data", secure=True) as stack:
        url = stack.url
        reader_only = stack.settings_as("dashboard").model_copy(update={"nats_url": url})
        async with HiveClient(url, stack.settings_as("client")) as client:
            await client.submit(load_plan_file(ASSETS / "approval.yaml", "sec-ap"))
            async with _board(reader_only, decide_wait_s=2.0) as (_, http):
                asked = await _asked(http)
                refused = await http.post(
                    f"/api/approvals/{asked['approval_id']}",
                    json={"decision": "approve", "by": "ada", "reason": "ok"},
                )
            board_settings = stack.dashboard_settings().model_copy(update={"nats_url": url})
            async with _board(board_settings) as (_, http):
                decided = await http.post(
                    f"/api/approvals/{asked['approval_id']}",
                    json={"decision": "approve", "by": "ada", "reason": "ok"},
                )
                row = await _row_when(http, "sec-ap")
        log = (stack.server_dir() / "nats-server.log").read_text(errors="replace")
    assert refused.status_code != 200, refused.text
    assert decided.status_code == 200, decided.text
    assert row["status"] == "completed"
    violations = set(re.findall(r'user:([\w-]+)" - (\w+) Violation - Subject "([^"]+)"', log))
    assert violations == {("dashboard", "Publish", "hive.control.sec-ap.approval")}, violations
