"""The tasks list and the task page of finished tasks, in a real Chromium.

One module-wide set of tasks, run once by the real services: a DAG in which one researcher
meets a tool error, one reaches its step limit and two dependents are blocked by it; a small
completed task; and a task whose model answers with markup.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import SCREENSHOT_TO, XSS, Hive, Tab, dag_plan, simple_plan

STATUS_COLOURS = {
    "completed": "rgb(30, 142, 62)",
    "budget_exceeded": "rgb(142, 36, 170)",
    "blocked": "rgb(121, 85, 72)",
}
"""The palette of dashboard.css for the statuses the DAG task ends in."""


@pytest.fixture(scope="module")
async def tasks(hive: Hive) -> dict[str, dict[str, Any]]:
    """The module's tasks, each run to its end: name -> TaskDetail."""
    ids = {
        "dag": await hive.client.submit(dag_plan("browser-dag")),
        "small": await hive.client.submit(simple_plan("browser-small")),
        "xss": await hive.client.submit(simple_plan("browser-xss", "xss.yaml")),
    }
    return {name: await hive.finished(task_id) for name, task_id in ids.items()}


async def test_the_tasks_list_shows_a_finished_task(tab: Tab, tasks: dict[str, Any]) -> None:
    """The list has the finished task with its status, goal, sub-task counts and tokens."""
    small = tasks["small"]
    assert small["status"] == "completed"
    await tab.open("/")
    row = tab.page.locator('tr[data-task-id="browser-small"]')
    await row.wait_for()
    assert await row.get_attribute("data-status") == "completed"
    text = await row.inner_text()
    assert small["goal"] in text
    assert "2 completed" in text
    tokens = small["usage"]["input_tokens"] + small["usage"]["output_tokens"]
    assert f"{tokens:,}" in text
    first = tab.page.locator("#tasks-table tbody tr").first
    newest = max(tasks.values(), key=lambda t: t["submitted_at"])
    assert await first.get_attribute("data-task-id") == newest["task_id"]
    await tab.page.select_option("#status-filter", "partial")
    await tab.page.locator('tr[data-task-id="browser-dag"]').wait_for()
    assert await tab.page.locator('tr[data-task-id="browser-small"]').count() == 0


async def test_the_dag_draws_every_node_in_its_status_colour(
    tab: Tab, tasks: dict[str, Any]
) -> None:
    """Each sub-task is one SVG node whose status and fill match the API and the legend."""
    dag = tasks["dag"]
    await tab.open("/tasks/browser-dag")
    await tab.page.locator("svg#dag g.node").first.wait_for()
    assert await tab.page.locator("svg#dag g.node").count() == len(dag["subtasks"])
    assert {s["status"] for s in dag["subtasks"]} == set(STATUS_COLOURS)
    for sub in dag["subtasks"]:
        node = tab.page.locator(f'svg#dag g.node[data-id="{sub["id"]}"]')
        assert await node.get_attribute("data-status") == sub["status"]
        fill = await node.locator("rect").evaluate("r => getComputedStyle(r).fill")
        assert fill == STATUS_COLOURS[sub["status"]], sub["id"]
        swatch = tab.page.locator(f'#dag-legend li[data-status="{sub["status"]}"] .swatch')
        legend = await swatch.evaluate("s => getComputedStyle(s).backgroundColor")
        assert legend == fill
        assert await swatch.is_visible()
    edges = tab.page.locator("svg#dag path.edge")
    assert await edges.count() == len(dag["graph"]["edges"]) == 4


async def test_clicking_a_blocked_node_shows_its_root_cause(
    tab: Tab, tasks: dict[str, Any]
) -> None:
    """A blocked node names the sub-task at the root of the block, and why that one ended."""
    subtasks = {s["id"]: s for s in tasks["dag"]["subtasks"]}
    assert subtasks["review"]["blocked_by"] == "research-risks"
    await tab.open("/tasks/browser-dag")
    node = tab.page.locator('svg#dag g.node[data-id="review"]')
    assert "blocked by research-risks" in (await node.text_content() or "")
    await node.click()
    panel = tab.page.locator('#subtask-panel[data-subtask="review"]')
    cause = panel.locator(".blocked-by")
    await cause.wait_for()
    text = await cause.inner_text()
    assert "research-risks" in text
    assert subtasks["research-risks"]["reason"] in text
    assert re.search(r"max_steps reached", text)
    root = tab.page.locator('svg#dag g.node[data-id="research-risks"]')
    assert "cause" in (await root.get_attribute("class") or "")
    await cause.locator("a").click()
    await tab.page.locator('#subtask-panel[data-subtask="research-risks"] #timeline').wait_for()


async def test_a_tool_error_is_shown_with_its_kind_and_suggestion(
    tab: Tab, hive: Hive, tasks: dict[str, Any]
) -> None:
    """The step of a failed tool call shows the error's kind, message and suggestion."""
    assert tasks["dag"]["status"] == "partial"
    steps = [
        row["event"]
        for row in await hive.events("browser-dag")
        if row["kind"] == "step" and row["event"]["name"] == "fetch_weather"
    ]
    error = steps[0]["output"]["error"]
    assert error["kind"] == "unknown_tool"
    await tab.open("/tasks/browser-dag")
    await tab.page.locator('svg#dag g.node[data-id="research-market"]').click()
    shown = tab.page.locator('#timeline .entry.step-tool .tool-error[data-kind="unknown_tool"]')
    await shown.wait_for()
    assert await shown.is_visible()
    text = await shown.inner_text()
    assert error["message"] in text
    assert f"Suggestion: {error['suggestion']}" in text
    args = tab.page.locator("#timeline .entry.step-tool .tool-args").first
    assert "Lisbon" in await args.inner_text()
    model = tab.page.locator("#timeline .entry.step-model").first
    assert "310 in / 25 out" in await model.inner_text()


async def test_model_output_with_markup_is_shown_as_text(tab: Tab, tasks: dict[str, Any]) -> None:
    """A model answer holding <script> and <img onerror> is text on the page; nothing runs."""
    assert tasks["xss"]["status"] == "completed"
    await tab.open("/tasks/browser-xss?sub=find")
    output = tab.page.locator('#subtask-panel[data-subtask="find"] pre.subtask-output').first
    await output.wait_for()
    assert await output.text_content() == XSS
    model = tab.page.locator("#timeline pre.model-output").first
    assert await model.text_content() == XSS
    assert await tab.page.evaluate("() => window.__hivebusInjected") is None
    for tag in ("script", "img", "b"):
        assert await tab.page.locator(f"#view {tag}").count() == 0, tag


async def test_a_screenshot_of_the_task_page_is_saved(
    tab: Tab, tasks: dict[str, Any], tmp_path: Path
) -> None:
    """A PNG of the task page with its DAG is written under the test's tmp dir (path printed)."""
    assert tasks["dag"]["status"] == "partial"
    await tab.open("/tasks/browser-dag?sub=research-market")
    await tab.page.locator("#timeline .tool-error").wait_for()
    await tab.page.evaluate("() => document.fonts.ready")
    path = tmp_path / "dashboard-task.png"
    await tab.page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes().startswith(b"\x89PNG")
    print(f"screenshot of the task page: {path}")  # noqa: T201 - the artifact's path, for people
    if SCREENSHOT_TO:
        Path(SCREENSHOT_TO).parent.mkdir(parents=True, exist_ok=True)
        await tab.page.screenshot(path=SCREENSHOT_TO, full_page=True)
        print(f"copied to {SCREENSHOT_TO}")  # noqa: T201
