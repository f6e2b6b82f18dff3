"""Property: an approved call's effect happens at most once, and never without an approval.

Whatever the decisions, duplicates, timeouts and crashes.

One answer asks for two emails (two approvals in one pause). Hypothesis draws a sequence of
decisions (for either approval or for an unknown id; approve, reject, modify, respond;
repeats of the same decision event) and timeouts, judged in order by the orchestrator's real
rules (`judge`, `resolve`, `timed_out`) against in-memory records, the first valid one winning.
What is still pending at the end times out. Then the run is resumed through the real agent
loop with the resolutions, and crashed at drawn checkpoint saves (a SIGKILL between any two
steps); each crash resumes again from the last checkpoint saved, as a redelivery does.

The effect is the outbox file `send_email` writes per idempotency key: a second application
(with a new key) would be a second file.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hivebus.agent.loop import RunOutcome
from hivebus.agent.tools.email import send_email
from hivebus.contracts import (
    ApprovalDecided,
    ApprovalRecord,
    ApprovalRequested,
    ApprovalResolved,
    Decision,
    SubTaskStatus,
    ToolCall,
)
from hivebus.orchestrator.approvals import judge, resolve, timed_out

from .approvalkit import Crash, Harness, paused, turns

EMAILS = {
    "c1": {"to": "one@example.com", "subject": "First", "body": "1"},
    "c2": {"to": "two@example.com", "subject": "Second", "body": "2"},
}
MAX_CRASHES = 4

decisions = st.lists(
    st.tuples(
        st.sampled_from(["c1", "c2", "ghost"]),
        st.sampled_from([*Decision, "timeout"]),
        st.booleans(),  # send this decision event twice (a redelivery or a double click)
    ),
    max_size=8,
)
crashes = st.lists(st.integers(min_value=1, max_value=8), max_size=MAX_CRASHES)


def _decided(request: ApprovalRequested, kind: Decision, n: int) -> ApprovalDecided:
    extra: dict[str, Any] = {}
    if kind is Decision.MODIFY:
        extra["arguments"] = {**request.arguments, "subject": f"Changed {n}"}
    if kind is Decision.RESPOND:
        extra["answer"] = "an answer"
    return ApprovalDecided(
        task_id=request.task_id,
        approval_id=request.approval_id,
        decision=kind,
        by=f"person-{n}",
        **extra,
    )


def _judge_all(
    requests: dict[str, ApprovalRequested], drawn: list[tuple[str, Any, bool]]
) -> dict[str, ApprovalRecord]:
    """The records after every drawn decision and timeout, as the orchestrator applies them."""
    records = {call: ApprovalRecord(request=r) for call, r in requests.items()}
    first = next(iter(requests.values()))
    now = first.expires_at - timedelta(seconds=60)
    for n, (call, kind, twice) in enumerate(drawn):
        now += timedelta(seconds=1)
        if call == "ghost":
            ghost = first.model_copy(update={"approval_id": "ap-0000000000000000"})
            verdict = judge(
                None,
                _decided(ghost, Decision.APPROVE, n),
                now=now,
                task_running=True,
                can_wait=False,
            )
            assert not isinstance(verdict, ApprovalResolved)  # nothing resolves from nowhere
            continue
        record = records[call]
        if kind == "timeout":
            changed = resolve(timed_out(record.request, record.request.expires_at))(record)
            records[call] = changed or record
            continue
        decided = _decided(record.request, kind, n)
        for _ in range(2 if twice else 1):
            verdict = judge(records[call], decided, now=now, task_running=True, can_wait=False)
            if isinstance(verdict, ApprovalResolved):
                records[call] = resolve(verdict)(records[call]) or records[call]
    for call, record in records.items():  # the expiry fires for what nobody decided
        changed = resolve(timed_out(record.request, record.request.expires_at))(record)
        records[call] = changed or record
    return records


async def _resume_through_crashes(
    h: Harness, resolutions: list[ApprovalResolved], crash_at: list[int]
) -> RunOutcome:
    """Resume; at each drawn crash, resume again from the last checkpoint saved."""
    state = None
    for offset in [*crash_at, None]:
        h.crash_at = None if offset is None else len(h.saved) + offset
        try:
            result = await h.resume(resolutions, state)
        except Crash:
            state = h.saved[-2] if len(h.saved) > 1 else None  # the crashed save did not land
            continue
        assert isinstance(result, RunOutcome), result
        return result
    raise AssertionError("the last resume has no crash")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=decisions, crash_at=crashes)
def test_an_approved_effect_happens_at_most_once_and_never_without_approval(
    drawn: list[tuple[str, Any, bool]], crash_at: list[int]
) -> None:
    """For any interleaving of decisions, timeouts and crashes: at most once, only if approved."""
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp)
        calls = [ToolCall(id=c, name="send_email", args=args) for c, args in EMAILS.items()]
        h = Harness(workspace, turns(calls, "done"), (send_email,))
        pause = paused(asyncio.run(h.run()))
        requests = {r.call_id: r for r in pause.requests}
        assert sorted(requests) == ["c1", "c2"]
        records = _judge_all(requests, drawn)
        resolutions = [r.resolution for r in records.values() if r.resolution is not None]
        outcome = asyncio.run(_resume_through_crashes(h, resolutions, crash_at))
        sent = (
            sorted((workspace / "outbox").glob("*.eml")) if (workspace / "outbox").is_dir() else []
        )
        texts = [p.read_text(encoding="utf-8") for p in sent]
    approved = {
        call
        for call, record in records.items()
        if record.resolution is not None
        and record.resolution.decision in {Decision.APPROVE, Decision.MODIFY}
    }
    assert outcome.status is SubTaskStatus.COMPLETED
    assert len(sent) == len(approved), (texts, records)  # once each, and only the approved
    for call in approved:
        assert sum(EMAILS[call]["to"] in text for text in texts) == 1
