"""A running task's page follows its events live, and a person approves in the page.

Both tasks pause on a real approval (the assistant asks before `send_email`), which makes
"while the task runs" a state the test controls instead of a race with the clock.
"""

from __future__ import annotations

import json

from conftest import Hive, Tab, approval_plan

from hivebus.contracts import Decision

SAME_DOCUMENT = "() => window.__sameDocument === true"


async def test_a_running_task_page_updates_live_without_a_reload(tab: Tab, hive: Hive) -> None:
    """Events that arrive after the page loaded (a decision made elsewhere) change it in place."""
    task_id = await hive.submit(approval_plan("browser-live"))
    (pending,) = await hive.pending(task_id)
    await tab.open(f"/tasks/{task_id}?sub=notify-customer")
    node = tab.page.locator('svg#dag g.node[data-id="notify-customer"]')
    await tab.page.locator(
        'svg#dag g.node[data-id="notify-customer"][data-status="awaiting_approval"]'
    ).wait_for()
    await tab.page.locator('#timeline .entry[data-kind="approval_requested"]').wait_for()
    assert await tab.page.locator('#task-status[data-status="running"]').count() == 1
    assert await tab.page.locator('#timeline .entry[data-kind="subtask_finished"]').count() == 0
    await tab.page.evaluate("() => { window.__sameDocument = true; }")
    shown_before = await tab.page.locator("#timeline .entry").count()

    outcome = await hive.client.decide(
        pending["approval_id"], Decision.APPROVE, "test", "fine", task_id=task_id, wait_s=15
    )
    assert outcome.status.value == "applied", outcome

    await tab.page.locator('#timeline .entry[data-kind="approval_resolved"]').wait_for()
    await tab.page.locator('#timeline .entry[data-kind="subtask_finished"]').wait_for()
    await tab.page.locator('#task-status[data-status="completed"]').wait_for()
    assert await node.get_attribute("data-status") == "completed"
    assert await tab.page.locator("#timeline .entry").count() > shown_before
    assert await tab.page.evaluate(SAME_DOCUMENT), "the page was reloaded"
    navigations = await tab.page.evaluate("() => performance.getEntriesByType('navigation').length")
    assert navigations == 1
    assert any("/stream" in url for url in tab.requests), "no event stream was opened"


async def test_approving_in_the_page_resumes_the_run(tab: Tab, hive: Hive) -> None:
    """Approving on the approvals page resumes the run, after invalid decisions were held back.

    The card shows the request; reject needs a reason, and bad arguments are caught against
    the tool's schema before anything is sent.
    """
    task_id = await hive.submit(approval_plan("browser-approve"))
    (pending,) = await hive.pending(task_id)
    await tab.open(f"/approvals?task={task_id}")
    card = tab.page.locator(f'article.approval[data-approval-id="{pending["approval_id"]}"]')
    await card.wait_for()
    text = await card.inner_text()
    assert "send_email" in text
    assert "write_risky" in text
    assert "ada@example.com" in text
    if pending.get("reason"):
        assert pending["reason"].splitlines()[0] in text

    await card.locator('button[data-decision="reject"]').click()
    await card.locator(".outcome .error").wait_for()
    assert "reason is required" in await card.locator(".outcome").inner_text()

    await card.locator("button.open-modify").click()
    editor = card.locator("textarea.args-editor")
    await editor.fill(json.dumps({"to": 5, "subject": "x", "body": "y"}))
    await card.locator(".problems li").first.wait_for()
    assert "to: expected string" in await card.locator(".problems").inner_text()
    await card.locator('button[data-decision="modify"]').click()
    assert "Fix the arguments first" in await card.locator(".outcome").inner_text()
    posted = [url for url in tab.requests if url.endswith(pending["approval_id"])]
    assert posted == [], "an invalid decision was sent"
    assert len(await hive.pending(task_id)) == 1

    await card.locator('button[data-decision="approve"]').click()
    await card.locator(".outcome .resolved").wait_for()
    detail = await hive.finished(task_id)
    assert detail["status"] == "completed"
    (sub,) = detail["subtasks"]
    assert sub["status"] == "completed"
    steps = [r["event"] for r in await hive.events(task_id) if r["kind"] == "step"]
    email = [s for s in steps if s["step_kind"] == "tool" and s["name"] == "send_email"]
    assert email, steps
    assert email[-1]["output"]["ok"] is True
    resolved = [
        r["event"]
        for r in await hive.events(task_id)
        if r["kind"] == "approval_resolved" and r["event"]["approval_id"] == pending["approval_id"]
    ]
    assert resolved[0]["decision"] == "approve"
    assert resolved[0]["by"] == "dashboard"
