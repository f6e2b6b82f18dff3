"""The approval commands as a user runs them: real `hivebus` processes, a real nats-server.

Most tests play the orchestrator's part themselves (they put requests, records and answers
on the bus as the contracts say), so they pin the CLI alone. The last ones run the whole
stack: `hivebus demo --scenario approval`, and a decision the real orchestrator refuses.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hivetest import HIVEBUS, REPO, process_env, provision_bus, write_config
from nats.js.api import DeliverPolicy
from nats.js.client import JetStreamContext

from hivebus.console.client import HiveClient
from hivebus.contracts import (
    ApprovalDecided,
    ApprovalKind,
    ApprovalRecord,
    ApprovalRefused,
    ApprovalRequested,
    ApprovalResolved,
    ApprovalStatus,
    Decision,
    RefusalCode,
    TaskFinished,
    TaskStatus,
    Tier,
    Usage,
    approval_id,
    subjects,
)
from hivebus.contracts.subjects import ControlKind
from hivebus.core import Settings, jetstream
from hivebus.orchestrator.service import start_orchestrator

pytestmark = pytest.mark.e2e

WAIT_S = 30.0
EMAIL = {"to": "ada@example.com", "subject": "Your refund", "body": "It is on its way."}
NOW = datetime.now(UTC)


def _request(
    task: str, sub: str = "mail", call: str = "call_1", **fields: Any
) -> ApprovalRequested:
    ap = approval_id(task, sub, 1, 1, call)
    values: dict[str, Any] = {
        "task_id": task,
        "approval_id": ap,
        "subtask_id": sub,
        "attempt": 1,
        "run_id": f"{task}-{sub}-run",
        "role": "mailer",
        "step": 1,
        "call_id": call,
        "approval_kind": ApprovalKind.TOOL_CALL,
        "tool": "send_email",
        "tier": Tier.WRITE_RISKY,
        "arguments": EMAIL,
        "reason": "the model wants to tell the customer; write_risky needs approval",
        "allowed_decisions": [Decision.APPROVE, Decision.REJECT, Decision.MODIFY],
        "expires_at": NOW + timedelta(hours=1),
        "pause": [ap],
    }
    return ApprovalRequested.model_validate({**values, **fields})


def _resolution(request: ApprovalRequested, decided: ApprovalDecided | None) -> ApprovalResolved:
    return ApprovalResolved(
        task_id=request.task_id,
        approval_id=request.approval_id,
        subtask_id=request.subtask_id,
        attempt=1,
        decision=decided.decision if decided else Decision.APPROVE,
        by=decided.by if decided else "someone",
        reason=decided.reason if decided else "",
        arguments=decided.arguments if decided else None,
        decision_event_id=decided.event_id if decided else None,
        decided_at=datetime.now(UTC),
        expires_at=request.expires_at,
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[HiveClient]:
    """A client of the test's provisioned server (no hivebus service runs)."""
    url = settings.nats_url or ""
    await provision_bus(url, settings, ["mailer"])
    async with HiveClient(url, settings) as hive:
        yield hive


async def _seed(
    client: HiveClient,
    request: ApprovalRequested,
    status: ApprovalStatus | None = ApprovalStatus.PENDING,
) -> None:
    """Publish `request` on EVENTS; record it as the orchestrator does, unless `status` is None."""
    await client.publisher.publish(request)
    if status is None:
        return
    kv = await (await jetstream(client.broker)).key_value(subjects.TASKS_BUCKET)
    resolution = _resolution(request, None) if status is ApprovalStatus.RESOLVED else None
    record = ApprovalRecord(request=request, status=status, resolution=resolution)
    key = subjects.approval_key(request.task_id, request.approval_id)
    await kv.put(key, record.model_dump_json().encode())


async def _hivebus(*args: str, url: str, **env: str) -> tuple[int, str, str]:
    """Run `hivebus` to its end against `url`; return exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        str(HIVEBUS),
        *args,
        env=process_env(HIVEBUS_NATS_URL=url, **env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _control_messages(js: JetStreamContext) -> int:
    info = await js.stream_info(subjects.CONTROL_STREAM)
    return int(info.state.messages)


async def _decisions(js: JetStreamContext) -> asyncio.Queue[ApprovalDecided]:
    """Every `ApprovalDecided` published from now on, as the orchestrator would read them."""
    queue: asyncio.Queue[ApprovalDecided] = asyncio.Queue()

    async def on(msg: Any) -> None:
        await queue.put(ApprovalDecided.model_validate_json(msg.data))

    await js.subscribe(
        subjects.control_of_kind(ControlKind.APPROVAL),
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.NEW,
        cb=on,
    )
    return queue


async def test_approvals_json_lists_the_pending_ones_oldest_first_with_commands(
    client: HiveClient, settings: Settings
) -> None:
    """Only pending requests, oldest first, each with its fields and the commands to answer it."""
    url = settings.nats_url or ""
    older = _request("t-one", ts=NOW - timedelta(minutes=5))
    newer = _request("t-two", ts=NOW - timedelta(minutes=1))
    unrecorded = _request("t-three", ts=NOW - timedelta(minutes=3))  # orchestrator behind
    resolved = _request("t-one", sub="other", ts=NOW - timedelta(minutes=4))
    of_finished = _request("t-done", ts=NOW - timedelta(minutes=2))
    await _seed(client, newer)
    await _seed(client, older)
    await _seed(client, unrecorded, status=None)
    await _seed(client, resolved, status=ApprovalStatus.RESOLVED)
    await client.publisher.publish(_resolution(resolved, None))
    await _seed(client, of_finished, status=None)
    kv = await (await jetstream(client.broker)).key_value(subjects.TASKS_BUCKET)
    done = TaskFinished(
        task_id="t-done", status=TaskStatus.CANCELLED, reason="x", usage=Usage(), subtasks=[]
    )
    await kv.put(subjects.result_key("t-done"), done.model_dump_json().encode())

    code, out, err = await _hivebus("approvals", "--json", url=url)
    assert code == 0, err
    listed = json.loads(out.strip().splitlines()[-1])
    assert [a["approval_id"] for a in listed] == [
        older.approval_id,
        unrecorded.approval_id,
        newer.approval_id,
    ]
    first = listed[0]
    assert first["task_id"] == "t-one"
    assert first["tool"] == "send_email"
    assert first["tier"] == "write_risky"
    assert first["arguments"] == EMAIL
    assert first["reason"].startswith("the model wants")
    assert datetime.fromisoformat(first["expires_at"]) == older.expires_at
    assert first["allowed_decisions"] == ["approve", "reject", "modify"]
    commands = first["commands"]
    assert commands["approve"] == f"hivebus approve {older.approval_id}"
    assert commands["reject"].startswith(f"hivebus reject {older.approval_id} --reason ")
    assert commands["modify"].startswith(f"hivebus modify {older.approval_id} --args ")
    assert json.loads(commands["modify"].split("--args ", 1)[1].strip("'")) == EMAIL

    code, out, err = await _hivebus("approvals", "--task", "t-one", "--json", url=url)
    assert code == 0, err
    assert [a["approval_id"] for a in json.loads(out)] == [older.approval_id]

    code, out, _ = await _hivebus("approvals", url=url)
    assert code == 0
    assert f"hivebus approve {older.approval_id}" in out
    assert "send_email (write_risky)" in out


async def test_no_pending_approvals_is_an_empty_json_list(
    client: HiveClient, settings: Settings
) -> None:
    """`approvals --json` with nothing pending prints `[]` and exits 0."""
    assert client.broker is not None
    code, out, err = await _hivebus("approvals", "--json", url=settings.nats_url or "")
    assert (code, json.loads(out)) == (0, []), err


async def test_modify_with_bad_json_is_a_usage_error_before_anything_is_sent(
    client: HiveClient, settings: Settings
) -> None:
    """`modify --args` that is not a JSON object exits 2 saying so, and publishes nothing."""
    js = await jetstream(client.broker)
    url = settings.nats_url or ""
    request = _request("t-one")
    await _seed(client, request)
    code, _, err = await _hivebus("modify", request.approval_id, "--args", "{bad", url=url)
    assert code == 2
    assert "--args is not JSON" in err
    code, _, err = await _hivebus("modify", request.approval_id, "--args", "[1, 2]", url=url)
    assert code == 2
    assert "--args must be a JSON object" in err
    assert "Traceback" not in err
    assert await _control_messages(js) == 0


async def test_reject_needs_a_reason(client: HiveClient, settings: Settings) -> None:
    """`reject` without `--reason` (or with an empty one) is a usage error; nothing is sent."""
    js = await jetstream(client.broker)
    url = settings.nats_url or ""
    request = _request("t-one")
    await _seed(client, request)
    code, _, err = await _hivebus("reject", request.approval_id, url=url)
    assert code == 2
    assert "Missing option '--reason'" in err
    code, _, err = await _hivebus("reject", request.approval_id, "--reason", " ", url=url)
    assert code == 2
    assert "--reason must say why" in err
    assert await _control_messages(js) == 0


async def test_an_unknown_approval_id_is_refused_with_its_code(
    client: HiveClient, settings: Settings
) -> None:
    """An id nobody asked for exits 9 printing `refused (unknown)` and why; nothing is sent."""
    js = await jetstream(client.broker)
    url = settings.nats_url or ""
    code, out, err = await _hivebus("approve", "ap-0000000000000000", "--as", "bob", url=url)
    assert code == 9
    assert "refused (unknown)" in err
    assert "hivebus approvals" in err
    code, out, _ = await _hivebus("approve", "ap-0000000000000000", "--json", url=url)
    assert code == 9
    outcome = json.loads(out)
    assert (outcome["status"], outcome["code"]) == ("refused", "unknown")
    assert await _control_messages(js) == 0


async def test_each_decision_is_sent_by_id_and_its_outcome_reported(
    client: HiveClient, settings: Settings
) -> None:
    """Each decision goes to its task as `--as`/$HIVEBUS_APPROVER; applied 0, refused 9, silence 10.

    A resolution naming the decision exits 0; a refusal naming it exits 9 printing its code
    and why; no answer within `--wait` exits 10.
    """
    js = await jetstream(client.broker)
    url = settings.nats_url or ""
    request = _request("t-one")
    await _seed(client, request)
    decisions = await _decisions(js)
    ap = request.approval_id

    approving = asyncio.create_task(
        _hivebus("approve", ap, "--reason", "fine", url=url, HIVEBUS_APPROVER="bob")
    )
    decided = await asyncio.wait_for(decisions.get(), WAIT_S)
    assert (decided.task_id, decided.approval_id, decided.decision) == ("t-one", ap, "approve")
    assert (decided.by, decided.reason) == ("bob", "fine")
    await client.publisher.publish(_resolution(request, decided))
    code, out, err = await approving
    assert code == 0, err
    assert f"approved {ap}" in out

    rejecting = asyncio.create_task(
        _hivebus("reject", ap, "--reason", "no", "--as", "carol", url=url)
    )
    decided = await asyncio.wait_for(decisions.get(), WAIT_S)
    assert (decided.decision, decided.by) == ("reject", "carol")
    refusal = ApprovalRefused(
        task_id="t-one",
        approval_id=ap,
        decision=Decision.REJECT,
        by="carol",
        code=RefusalCode.ALREADY_DECIDED,
        why="bob approved it first",
        decision_event_id=decided.event_id,
    )
    await client.publisher.publish(refusal)
    code, _, err = await rejecting
    assert code == 9
    assert "refused (already_decided): bob approved it first" in err

    other = _request("t-one", sub="second")  # one resolution per approval: another one
    await _seed(client, other)
    new_args = {**EMAIL, "subject": "Checked"}
    modifying = asyncio.create_task(
        _hivebus(
            "modify", other.approval_id, "--args", json.dumps(new_args), "--task", "t-one", url=url
        )
    )
    decided = await asyncio.wait_for(decisions.get(), WAIT_S)
    assert (decided.decision, decided.arguments) == ("modify", new_args)
    await client.publisher.publish(_resolution(other, decided))
    code, out, err = await modifying
    assert code == 0, err
    assert "modified" in out

    question = _request("t-one", sub="ask", approval_kind=ApprovalKind.QUESTION, tier=None)
    await _seed(client, question)
    code, out, err = await _hivebus(
        "answer", question.approval_id, "Tuesday", "--wait", "2", "--json", url=url
    )
    decided = await asyncio.wait_for(decisions.get(), WAIT_S)
    assert (decided.decision, decided.answer) == ("respond", "Tuesday")
    assert code == 10, err
    assert json.loads(out)["status"] == "unanswered"


async def test_watch_prints_requests_with_their_commands_and_outcomes(
    client: HiveClient, settings: Settings
) -> None:
    """`watch` prints a request (tool, tier, arguments, reason, expiry, commands) and outcomes."""
    request = _request("t-one")
    await _seed(client, request)
    decided = ApprovalDecided(
        task_id="t-one", approval_id=request.approval_id, decision=Decision.APPROVE, by="bob"
    )
    await client.publisher.publish(_resolution(request, decided))
    refusal = ApprovalRefused(
        task_id="t-one",
        approval_id=request.approval_id,
        decision=Decision.REJECT,
        by="carol",
        code=RefusalCode.ALREADY_DECIDED,
        why="decided already",
        decision_event_id="e-2",
    )
    await client.publisher.publish(refusal)
    done = TaskFinished(
        task_id="t-one", status=TaskStatus.COMPLETED, reason="ok", usage=Usage(), subtasks=[]
    )
    await client.publisher.publish(done)
    code, _, err = await _hivebus("watch", "t-one", url=settings.nats_url or "")
    assert code == 0, err
    assert f"approval {request.approval_id}" in err
    assert "send_email (write_risky)" in err
    assert '"to": "ada@example.com"' in err
    assert "the model wants to tell the customer" in err
    assert "expires at" in err
    assert f"hivebus approve {request.approval_id}" in err
    assert f"hivebus reject {request.approval_id} --reason" in err
    assert f"hivebus modify {request.approval_id} --args" in err
    flat = " ".join(err.split())  # outcome lines wrap at the terminal's width
    assert "approved by bob" in flat
    assert "refused (already_decided): decided already" in flat


async def test_the_orchestrator_refuses_a_decision_for_an_approval_nobody_asked_for(
    tmp_path: Path, settings: Settings
) -> None:
    """An unknown id sent with `--task`: the real orchestrator's `unknown` refusal is printed."""
    url = settings.nats_url or ""
    config = write_config(tmp_path, {"mailer": {"system": "s", "model": "scripted:x.yaml"}})
    await provision_bus(url, settings, ["mailer"])
    quick = settings.model_copy(update={"approval_early_wait_s": 1.0})
    broker = await start_orchestrator(quick, config, url)
    try:
        code, _, err = await _hivebus(
            "approve", "ap-0123456789abcdef", "--task", "t-none", "--wait", "20", url=url
        )
    finally:
        await broker.stop()
    assert code == 9, err
    assert "refused (unknown)" in err


def _demo(data_dir: Path, answer: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(HIVEBUS),
            "demo",
            "--scenario",
            "approval",
            "--approve",
            answer,
            "--json",
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=180,
        cwd=REPO,
        env=process_env(HIVEBUS_APPROVER="demo-person"),
        check=False,
    )


def _outbox(data_dir: Path) -> list[Path]:
    folder = data_dir / "workspace" / "outbox"
    return sorted(folder.glob("*.eml")) if folder.is_dir() else []


def test_demo_approval_yes_completes_with_the_email_sent_once(tmp_path: Path) -> None:
    """`--approve yes --json` ends `completed`, the approval summarised, one email in the outbox."""
    done = _demo(tmp_path, "yes")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["kind"], result["status"]) == ("task_finished", "completed")
    [sub] = result["subtasks"]
    [approval] = sub["approvals"]
    assert (approval["tool"], approval["decision"], approval["by"]) == (
        "send_email",
        "approve",
        "demo-person",
    )
    [mail] = _outbox(tmp_path)
    text = mail.read_text(encoding="utf-8")
    assert "ada@example.com" in text
    assert "Your refund R-1042 is on its way" in text
    assert "hivebus approve ap-" in done.stderr  # the request was shown with its commands
    assert "1 email(s)" in done.stderr


def test_demo_approval_no_ends_with_the_rejection_in_the_summary(tmp_path: Path) -> None:
    """`--approve no`: nothing is sent; the sub-task's summary names the rejection and why."""
    done = _demo(tmp_path, "no")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    [sub] = result["subtasks"]
    [approval] = sub["approvals"]
    assert approval["decision"] == "reject"
    assert "finance team" in approval["reason"]
    assert _outbox(tmp_path) == []
    assert "rejected by demo-person" in done.stderr


def test_demo_approval_modify_sends_the_changed_email_once(tmp_path: Path) -> None:
    """`--approve modify`: completed, one email, with the demo's subject instead."""
    done = _demo(tmp_path, "modify")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "completed"
    [approval] = result["subtasks"][0]["approvals"]
    assert approval["decision"] == "modify"
    assert set(approval["arguments_diff"]) == {"subject"}
    [mail] = _outbox(tmp_path)
    assert "checked by a person" in mail.read_text(encoding="utf-8")
