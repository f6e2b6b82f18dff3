"""The approvals, dead-letter and stats pages load and show what the API holds."""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import Hive, Tab

from hivebus.contracts import subjects


async def test_the_dlq_stats_and_approvals_pages_render(tab: Tab, hive: Hive) -> None:
    """A dead letter is listed and its entry shows the error chain; stats and approvals render.

    The dead letter is a submission that names no task id (it cannot be answered otherwise).
    """
    await hive.client.broker.publish(b'{"goal": "no task id"}', subject=subjects.SUBMIT)
    entries: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        while not entries:
            entries = (await hive.http.get("/api/dlq")).json()["entries"]
            await asyncio.sleep(0.1)
    (entry,) = entries
    await tab.open("/dlq")
    row = tab.page.locator(f'#dlq-table tr[data-seq="{entry["seq"]}"]')
    await row.wait_for()
    assert entry["why"] in await row.inner_text()
    await row.locator("a").first.click()
    chain = tab.page.locator("ol.error-chain")
    await chain.wait_for()
    assert entry["errors"][-1] in await chain.inner_text()
    assert await tab.page.locator("#replay-scratch").is_visible()

    await tab.open("/stats")
    await tab.page.locator("#stats-since").wait_for()
    await tab.open("/approvals")
    await tab.page.locator("#approvals-empty").wait_for(state="visible")
