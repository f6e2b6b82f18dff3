"""With `HIVEBUS_DASHBOARD_TOKEN` set, the page asks for the token once and sends it."""

from __future__ import annotations

from typing import Any

from conftest import Hive, Tab
from pydantic import SecretStr

from hivebus.console.dashboard.server import DashboardServer

TOKEN = "browser-test-token"  # noqa: S105 - a test's own token, for its own server


async def test_the_page_asks_for_the_token_once_and_sends_it(tab: Tab, hive: Hive) -> None:
    """A wrong token is asked again; the right one is kept for the tab and sent as Bearer."""
    settings = hive.settings.model_copy(update={"dashboard_token": SecretStr(TOKEN)})
    async with DashboardServer(settings, hive.url, host="127.0.0.1", port=0) as guarded:
        await guarded.wait_ready(30.0)
        tab.origin = guarded.url.rstrip("/")
        sent: list[dict[str, Any]] = []
        tab.page.on(
            "request",
            lambda r: sent.append({"url": r.url, "auth": r.headers.get("authorization")}),
        )
        await tab.open("/")
        dialog = tab.page.locator("#token-dialog")
        await dialog.wait_for(state="visible")
        await tab.page.fill("#token-input", "wrong")
        await tab.page.press("#token-input", "Enter")
        await tab.page.locator("#token-error").wait_for(state="visible")
        assert "refused" in await tab.page.locator("#token-error").inner_text()
        await tab.page.fill("#token-input", TOKEN)
        await tab.page.press("#token-input", "Enter")
        await tab.page.locator("#tasks-table tbody tr").first.wait_for()
        assert await dialog.is_visible() is False
        kept = await tab.page.evaluate("() => sessionStorage.getItem('hivebus.dashboard.token')")
        assert kept == TOKEN
        api = [r for r in sent if "/api/tasks" in r["url"]]
        assert api
        assert all(r["auth"] == f"Bearer {TOKEN}" for r in api[-1:])
        await tab.page.reload()
        await tab.page.locator("#tasks-table tbody tr").first.wait_for()
        assert await dialog.is_visible() is False


async def test_a_token_in_the_url_is_kept_and_removed_from_the_address(
    tab: Tab, hive: Hive
) -> None:
    """`/?token=...` (as `hivebus dashboard` prints it) logs the tab in without asking."""
    settings = hive.settings.model_copy(update={"dashboard_token": SecretStr(TOKEN)})
    async with DashboardServer(settings, hive.url, host="127.0.0.1", port=0) as guarded:
        await guarded.wait_ready(30.0)
        tab.origin = guarded.url.rstrip("/")
        await tab.page.goto(f"{tab.origin}/?token={TOKEN}#/")
        await tab.page.locator("#tasks-table tbody tr").first.wait_for()
        assert await tab.page.locator("#token-dialog").is_visible() is False
        assert "token" not in tab.page.url
