"""The console's approval pieces without a bus: outcomes, commands, rendering, the demo's person."""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from hivebus.console.approval_commands import arguments_or_exit, exit_code
from hivebus.console.approval_view import (
    answer_commands,
    request_json,
    request_lines,
    summary_lines,
)
from hivebus.console.deciding import Outcome, OutcomeStatus, not_found, outcome_of
from hivebus.console.demo_approval import (
    MODIFIED_SUBJECT,
    REJECT_REASON,
    DemoAnswer,
    as_told,
    ask,
)
from hivebus.console.pending import _decode_requests
from hivebus.contracts import (
    ApprovalDecided,
    ApprovalKind,
    ApprovalRefused,
    ApprovalRequested,
    ApprovalResolved,
    ApprovalSummary,
    Decision,
    RefusalCode,
    SubTaskStatus,
    SubTaskSummary,
    TaskFinished,
    TaskStatus,
    Tier,
    Usage,
)
from hivebus.contracts.subjects import EventKind

EMAIL = {"to": "ada@example.com", "subject": "Your refund", "body": "It's on its way."}
EXPIRES = datetime(2030, 1, 1, tzinfo=UTC)


def _request(**fields: Any) -> ApprovalRequested:
    values: dict[str, Any] = {
        "task_id": "t-1",
        "approval_id": "ap-0123456789abcdef",
        "subtask_id": "mail",
        "attempt": 1,
        "run_id": "r",
        "role": "mailer",
        "step": 1,
        "call_id": "call_1",
        "approval_kind": ApprovalKind.TOOL_CALL,
        "tool": "send_email",
        "tier": Tier.WRITE_RISKY,
        "arguments": EMAIL,
        "reason": "write_risky needs approval",
        "allowed_decisions": [Decision.APPROVE, Decision.REJECT, Decision.MODIFY],
        "expires_at": EXPIRES,
    }
    return ApprovalRequested.model_validate({**values, **fields})


def _decided(**fields: Any) -> ApprovalDecided:
    values: dict[str, Any] = {
        "task_id": "t-1",
        "approval_id": "ap-0123456789abcdef",
        "decision": Decision.APPROVE,
        "by": "bob",
    }
    return ApprovalDecided.model_validate({**values, **fields})


def _resolved(decision_event_id: str | None, approval: str = "ap-0123456789abcdef") -> Any:
    return ApprovalResolved(
        task_id="t-1",
        approval_id=approval,
        subtask_id="mail",
        attempt=1,
        decision=Decision.APPROVE,
        by="bob",
        decision_event_id=decision_event_id,
        decided_at=EXPIRES - timedelta(hours=1),
        expires_at=EXPIRES,
    )


def _refused(decision_event_id: str | None) -> ApprovalRefused:
    return ApprovalRefused(
        task_id="t-1",
        approval_id="ap-0123456789abcdef",
        code=RefusalCode.ALREADY_DECIDED,
        why="bob decided first",
        decision_event_id=decision_event_id,
    )


def test_a_resolution_naming_the_decision_means_applied() -> None:
    """The `ApprovalResolved` whose `decision_event_id` is this decision's: applied."""
    decided = _decided()
    outcome = outcome_of(decided, _resolved(decided.event_id))
    assert outcome is not None
    assert outcome.status is OutcomeStatus.APPLIED
    assert exit_code(outcome) == 0


def test_a_refusal_naming_the_decision_means_refused_with_its_code() -> None:
    """The `ApprovalRefused` naming this decision: refused, with the code and why; exit 9."""
    decided = _decided()
    outcome = outcome_of(decided, _refused(decided.event_id))
    assert outcome is not None
    assert (outcome.status, outcome.code, outcome.why) == (
        OutcomeStatus.REFUSED,
        RefusalCode.ALREADY_DECIDED,
        "bob decided first",
    )
    assert exit_code(outcome) == 9


def test_events_about_other_decisions_say_nothing() -> None:
    """Another decision's resolution or refusal, or another approval's, is not this outcome."""
    decided = _decided()
    assert outcome_of(decided, _resolved("someone-else")) is None
    assert outcome_of(decided, _resolved(None)) is None  # a timeout
    assert outcome_of(decided, _refused("someone-else")) is None
    assert outcome_of(decided, _refused(None)) is None  # refused at resume
    assert outcome_of(decided, _resolved(decided.event_id, approval="ap-ffffffffffffffff")) is None
    assert outcome_of(decided, object()) is None


def test_exit_codes_of_outcomes() -> None:
    """Refused 9, unanswered 10, applied and sent 0; an id nobody asked for is refused."""
    assert exit_code(not_found("ap-x", "no")) == 9
    assert not_found("ap-x", "no").code is RefusalCode.UNKNOWN
    assert exit_code(Outcome(OutcomeStatus.UNANSWERED, "ap-x")) == 10
    assert exit_code(Outcome(OutcomeStatus.SENT, "ap-x")) == 0


def test_commands_are_those_the_request_allows() -> None:
    """Only the allowed decisions get a command; a question is answered with `answer`."""
    assert set(answer_commands(_request())) == {"approve", "reject", "modify"}
    only = _request(allowed_decisions=[Decision.APPROVE, Decision.REJECT])
    assert set(answer_commands(only)) == {"approve", "reject"}
    question = _request(
        approval_kind=ApprovalKind.QUESTION, allowed_decisions=[Decision.RESPOND], tier=None
    )
    assert answer_commands(question) == {
        "respond": "hivebus answer ap-0123456789abcdef 'your answer'"
    }
    prefixed = answer_commands(_request(), prefix="HIVEBUS_NATS_URL=nats://h:1 ")
    assert prefixed["approve"] == "HIVEBUS_NATS_URL=nats://h:1 hivebus approve ap-0123456789abcdef"


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=30), max_size=4))
def test_the_modify_command_gives_back_the_arguments_through_a_shell(args: dict[str, str]) -> None:
    """The printed `modify` command, split as a shell splits it, carries the arguments exactly."""
    words = shlex.split(answer_commands(_request(arguments=args))["modify"])
    assert words[:3] == ["hivebus", "modify", "ap-0123456789abcdef"]
    assert words[3] == "--args"
    assert json.loads(words[4]) == args


def test_request_json_is_the_request_with_its_commands() -> None:
    """`approvals --json` items are the contract's fields plus `commands`."""
    item = request_json(_request())
    assert ApprovalRequested.model_validate({k: v for k, v in item.items() if k != "commands"})
    assert item["commands"]["approve"] == "hivebus approve ap-0123456789abcdef"


def test_request_lines_show_everything_and_escape_markup() -> None:
    """Tool, tier, arguments, reason, expiry and commands are printed; markup in them is text."""
    console = Console(record=True, width=400)
    request = _request(arguments={"body": "[bold]hi[/bold]"}, reason="because [red]")
    console.print(request_lines(request))
    text = console.export_text()
    assert "tool send_email (write_risky)" in text
    assert '{"body": "[bold]hi[/bold]"}' in text
    assert "because [red]" in text
    assert "expires at 2030-01-01T00:00:00+00:00" in text
    assert "hivebus reject ap-0123456789abcdef --reason" in text


def test_summary_lines_list_each_approval_with_its_diff() -> None:
    """A finished task's approvals: who decided what, and what `modify` changed."""
    approval = ApprovalSummary(
        approval_id="ap-1",
        approval_kind=ApprovalKind.TOOL_CALL,
        tool="send_email",
        decision=Decision.MODIFY,
        by="bob",
        at=EXPIRES,
        arguments_diff={"subject": {"from": "a", "to": "b"}},
    )
    sub = SubTaskSummary(id="mail", role="mailer", status=SubTaskStatus.COMPLETED)
    sub.approvals.append(approval)
    result = TaskFinished(
        task_id="t-1", status=TaskStatus.COMPLETED, reason="ok", usage=Usage(), subtasks=[sub]
    )
    lines = summary_lines(result)
    assert lines[0] == "approvals:"
    assert "mail ap-1 send_email modified by bob" in lines[1]
    assert '"subject": {"from": "a", "to": "b"}' in lines[1]
    assert summary_lines(result.model_copy(update={"subtasks": []})) == []


@pytest.mark.parametrize(
    ("text", "message"),
    [("{bad", "not JSON"), ("[1]", "JSON object"), ('"x"', "JSON object"), ("", "not JSON")],
)
def test_bad_args_are_a_usage_error(text: str, message: str, capsys: Any) -> None:
    """`--args` that is not a JSON object exits 2 with what is wrong."""
    with pytest.raises(typer.Exit) as raised:
        arguments_or_exit(text)
    assert raised.value.exit_code == 2
    assert message in capsys.readouterr().err


def test_good_args_are_the_object() -> None:
    """`--args` holding an object is that object."""
    assert arguments_or_exit(json.dumps(EMAIL)) == EMAIL


def test_the_demo_decides_as_told() -> None:
    """`yes` approves, `no` rejects with a reason, `modify` changes only the subject."""
    request = _request()
    assert as_told(DemoAnswer.YES, request).decision is Decision.APPROVE
    rejected = as_told(DemoAnswer.NO, request)
    assert (rejected.decision, rejected.reason) == (Decision.REJECT, REJECT_REASON)
    modified = as_told(DemoAnswer.MODIFY, request)
    assert modified.decision is Decision.MODIFY
    assert modified.arguments == {**EMAIL, "subject": MODIFIED_SUBJECT}


def test_the_demo_keeps_to_what_a_request_allows() -> None:
    """`modify` where it is not allowed approves; a question is answered."""
    no_modify = _request(allowed_decisions=[Decision.APPROVE, Decision.REJECT])
    assert as_told(DemoAnswer.MODIFY, no_modify).decision is Decision.APPROVE
    question = _request(approval_kind=ApprovalKind.QUESTION, allowed_decisions=[Decision.RESPOND])
    assert as_told(DemoAnswer.YES, question).decision is Decision.RESPOND


class _Replies:
    """A terminal that answers from a list and remembers what it was asked."""

    def __init__(self, *replies: str) -> None:
        self.replies = list(replies)
        self.asked: list[str] = []

    def __call__(self, question: str, default: str | None) -> str:
        self.asked.append(question)
        reply = self.replies.pop(0)
        return default if reply == "" and default is not None else reply


def test_the_terminal_asks_until_an_allowed_answer_then_for_json_arguments() -> None:
    """An unknown key is asked again; `m` asks for arguments until they are a JSON object."""
    replies = _Replies("x", "m", "{bad", "[1]", '{"to": "b@example.com"}')
    choice = ask(_request(), Console(stderr=True), replies)
    assert choice.decision is Decision.MODIFY
    assert choice.arguments == {"to": "b@example.com"}
    assert replies.replies == []
    assert sum(q.startswith("new arguments") for q in replies.asked) == 3


def test_the_terminal_default_is_yes_and_no_asks_why() -> None:
    """Enter approves; `n` asks why, defaulting to the demo's reason."""
    assert ask(_request(), Console(stderr=True), _Replies("")).decision is Decision.APPROVE
    rejected = ask(_request(), Console(stderr=True), _Replies("n", "not today"))
    assert (rejected.decision, rejected.reason) == (Decision.REJECT, "not today")
    only = _request(allowed_decisions=[Decision.APPROVE, Decision.REJECT])
    assert ask(only, Console(stderr=True), _Replies("m", "y")).decision is Decision.APPROVE


def test_pending_requests_are_those_without_a_resolution_first_seen_wins() -> None:
    """Raw events decode into requests by id (a repeat ignored) and resolved ids; junk skipped."""
    first = _request(reason="first")
    again = _request(reason="again")
    resolved = _resolved("e")
    requests, done = _decode_requests(
        [
            (EventKind.APPROVAL_REQUESTED.value, first.model_dump_json().encode()),
            (EventKind.APPROVAL_REQUESTED.value, again.model_dump_json().encode()),
            (EventKind.APPROVAL_REQUESTED.value, b"{not json"),
            (EventKind.APPROVAL_RESOLVED.value, resolved.model_dump_json().encode()),
        ]
    )
    assert requests[first.approval_id].reason == "first"
    assert done == {resolved.approval_id}
