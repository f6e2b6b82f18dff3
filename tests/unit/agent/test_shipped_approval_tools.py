"""The tools shipped for approvals.

`send_email` writes each email once per idempotency key, atomically; `ask_human` is a question
the runtime pauses for, never a function it runs.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from hivebus.agent.errors import ToolFailure
from hivebus.agent.tiers import TierDecision, TierPolicy
from hivebus.agent.tool import ToolContext
from hivebus.agent.toolbox import Toolbox, load_tool
from hivebus.agent.tools.email import put_once, send_email
from hivebus.agent.tools.human import ask_human
from hivebus.contracts import Tier, ToolErrorKind

EMAIL = {"to": "customer@example.com", "subject": "Your refund", "body": "It is on its way."}
MAILER = Toolbox([send_email, ask_human], [Tier.READ], approve_tiers=[Tier.WRITE_RISKY])


async def send(context: ToolContext, **changes: str) -> object:
    """Call `send_email` as an approved call, with `EMAIL` changed by `changes`."""
    result = await MAILER.call("send_email", {**EMAIL, **changes}, context, approved=True)
    if not result.ok:
        assert result.error is not None
        return result.error
    return result.data


def outbox(workspace: Path) -> list[Path]:
    """The emails written so far."""
    return sorted((workspace / "outbox").glob("*"))


def test_the_shipped_tools_load_by_reference_with_their_tiers() -> None:
    """`send_email` is `write_risky` (asked by default); `ask_human` a `read` question."""
    email = load_tool("hivebus.agent.tools.email:send_email")
    human = load_tool("hivebus.agent.tools.human:ask_human")
    assert (email.tier, email.asks_human) == (Tier.WRITE_RISKY, False)
    assert (human.tier, human.asks_human) == (Tier.READ, True)
    assert MAILER.decide("send_email") is TierDecision.APPROVE
    assert MAILER.decide("ask_human") is TierDecision.APPROVE
    assert TierPolicy.of([]).decide(human.tier, asks_human=True) is TierDecision.DENY


async def test_an_email_is_written_whole_to_the_outbox(
    tool_context: ToolContext, workspace: Path
) -> None:
    """One `.eml` named by the key, with the headers and body, and no temporary file left."""
    data = await send(tool_context)
    [mail] = outbox(workspace)
    assert isinstance(data, dict)
    assert data["outbox"] == f"outbox/{mail.name}"
    assert data["replayed"] is False
    text = mail.read_text(encoding="utf-8")
    for line in (
        "To: customer@example.com",
        "Subject: Your refund",
        f"X-Hivebus-Idempotency-Key: {tool_context.idempotency_key}",
        "It is on its way.",
    ):
        assert line in text
    assert "Date:" not in text  # the same call makes the same bytes


async def test_the_same_key_and_content_again_writes_nothing(
    tool_context: ToolContext, workspace: Path
) -> None:
    """A replayed call finds its email there already: a no-op that says it was a repeat."""
    await send(tool_context)
    [mail] = outbox(workspace)
    before = (mail.read_bytes(), mail.stat().st_mtime_ns)
    again = await send(tool_context)
    assert isinstance(again, dict)
    assert again["replayed"] is True
    assert outbox(workspace) == [mail]
    assert (mail.read_bytes(), mail.stat().st_mtime_ns) == before


async def test_the_same_key_with_other_content_is_a_permanent_error(
    tool_context: ToolContext, workspace: Path
) -> None:
    """Another email under a key already used is refused, saying so; the first one stays."""
    await send(tool_context)
    [mail] = outbox(workspace)
    first = mail.read_bytes()
    error = await send(tool_context, body="Something else.")
    assert getattr(error, "kind", None) is ToolErrorKind.PERMANENT
    assert "already written" in str(getattr(error, "message", ""))
    assert "different content" in str(getattr(error, "message", ""))
    assert mail.read_bytes() == first


async def test_another_key_is_another_email(tool_context: ToolContext, workspace: Path) -> None:
    """Two calls (two keys) are two emails."""
    await send(tool_context)
    await send(dataclasses.replace(tool_context, idempotency_key="run1:4:call_2"))
    assert len(outbox(workspace)) == 2


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"to": "not an address"}, "not an email address"),
        ({"to": " , "}, "names no recipient"),
        ({"subject": "Hi\r\nBcc: everyone@example.com"}, "line break"),
    ],
)
async def test_bad_addresses_and_header_injection_are_invalid_arguments(
    tool_context: ToolContext, workspace: Path, changes: dict[str, str], says: str
) -> None:
    """Nothing is written; the model reads what to fix."""
    error = await send(tool_context, **changes)
    assert getattr(error, "kind", None) is ToolErrorKind.INVALID_ARGUMENTS
    assert says in str(getattr(error, "message", ""))
    assert outbox(workspace) == []


async def test_the_outbox_folder_comes_from_the_options(
    tool_context: ToolContext, workspace: Path
) -> None:
    """`tool_options.email.outbox` is a folder inside the workspace."""
    context = dataclasses.replace(tool_context, options={"email": {"outbox": "mail/out"}})
    data = await send(context)
    assert isinstance(data, dict)
    assert str(data["outbox"]).startswith("mail/out/")
    assert len(list((workspace / "mail" / "out").glob("*.eml"))) == 1
    escape = dataclasses.replace(tool_context, options={"email": {"outbox": "../elsewhere"}})
    error = await send(escape)
    assert getattr(error, "kind", None) is ToolErrorKind.INVALID_ARGUMENTS


def test_two_writers_of_one_key_write_it_once(tmp_path: Path) -> None:
    """Racing writers of one name: exactly one creates it, whole; no temporary file is left."""
    wins: list[bool] = []
    start = threading.Barrier(8)

    def write(n: int) -> None:
        start.wait()
        wins.append(put_once(tmp_path, "mail.eml", f"writer {n}".encode() * 1000))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 7 + [True]
    assert [p.name for p in tmp_path.iterdir()] == ["mail.eml"]
    content = (tmp_path / "mail.eml").read_bytes()
    assert content in {f"writer {n}".encode() * 1000 for n in range(8)}


async def test_ask_human_is_never_run_as_a_function(tool_context: ToolContext) -> None:
    """Outside the run's pause the toolbox refuses it; its function itself says why."""
    refused = await MAILER.call("ask_human", {"question": "Which plan?"}, tool_context)
    assert refused.error is not None
    assert refused.error.kind is ToolErrorKind.DENIED
    with pytest.raises(ToolFailure, match="questions are asked only inside a run"):
        ask_human.func(question="Which plan?")
