"""The approval demo's person: answers each approval the task asks for, as told or by asking.

On a terminal (and without `--approve`) it asks y/n/m, and for `m` the new arguments as JSON;
otherwise it decides as told (`--approve yes|no|modify`, `yes` when nothing is said). Its
decisions go through `HiveClient.decide`, as anyone's would; their outcomes are printed by the
task's progress lines.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from hivebus.console.approval_view import arguments_json
from hivebus.console.client import HiveClient
from hivebus.contracts import ApprovalKind, ApprovalRefused, ApprovalRequested, Decision

MODIFIED_SUBJECT = "Refund R-1042: the money is on its way (checked by a person)"
"""The subject `--approve modify` gives the email instead of the model's."""

REJECT_REASON = "not by email: the finance team announces refunds itself"
ANSWER_TEXT = "Yes, go ahead."
"""What the demo answers a question (`ask_human`) when it decides as told."""


Prompt = Callable[[str, str | None], str]
"""Asks one question on the terminal, with a default answer (or none), and returns the reply."""


def terminal_prompt(question: str, default: str | None) -> str:
    """Ask on the terminal (prompts go to stderr, so stdout stays for the result)."""
    return str(typer.prompt(question, default=default, err=True))


class DemoAnswer(StrEnum):
    """How the demo decides without asking."""

    YES = "yes"
    NO = "no"
    MODIFY = "modify"


@dataclass(frozen=True)
class Choice:
    """One decision the demo makes: what, why, and what goes with it."""

    decision: Decision
    reason: str = ""
    arguments: dict[str, Any] | None = None
    answer: str | None = None


def modified_arguments(request: ApprovalRequested) -> dict[str, Any]:
    """The request's arguments with the demo's subject (only the subject changes)."""
    return {**request.arguments, "subject": MODIFIED_SUBJECT}


def as_told(answer: DemoAnswer, request: ApprovalRequested) -> Choice:
    """The decision `--approve` asks for, or the nearest the request allows."""
    if request.approval_kind is ApprovalKind.QUESTION:
        return Choice(Decision.RESPOND, answer=ANSWER_TEXT)
    if answer is DemoAnswer.NO:
        return Choice(Decision.REJECT, reason=REJECT_REASON)
    if answer is DemoAnswer.MODIFY and Decision.MODIFY in request.allowed_decisions:
        return Choice(
            Decision.MODIFY,
            reason="the demo changed the subject",
            arguments=modified_arguments(request),
        )
    return Choice(Decision.APPROVE, reason="the demo approves it")


def _new_arguments(
    request: ApprovalRequested, console: Console, prompt: Prompt
) -> dict[str, Any] | None:
    text = prompt("new arguments (JSON)", arguments_json(modified_arguments(request)))
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        console.print(f"[red]not JSON:[/] {escape(exc.msg)}; try again")
        return None
    if not isinstance(value, dict):
        console.print("[red]give the arguments as a JSON object[/]; try again")
        return None
    return value


def ask(request: ApprovalRequested, console: Console, prompt: Prompt = terminal_prompt) -> Choice:
    """Ask (blocking) until the answer is a decision the request allows."""
    if request.approval_kind is ApprovalKind.QUESTION:
        return Choice(Decision.RESPOND, answer=prompt("your answer", None))
    keys = {"y": Decision.APPROVE, "n": Decision.REJECT, "m": Decision.MODIFY}
    offered = "/".join(k for k, d in keys.items() if d in request.allowed_decisions)
    while True:
        key = prompt(f"approve {request.tool}? ({offered})", "y")
        decision = keys.get(key.strip().lower()[:1])
        if decision is None or decision not in request.allowed_decisions:
            console.print(f"answer one of {offered}")
            continue
        if decision is Decision.APPROVE:
            return Choice(decision, reason="approved at the demo's prompt")
        if decision is Decision.REJECT:
            return Choice(decision, reason=prompt("why not", REJECT_REASON))
        arguments = None
        while arguments is None:  # asked again until the reply is a JSON object
            arguments = _new_arguments(request, console, prompt)
        return Choice(decision, reason="changed at the demo's prompt", arguments=arguments)


class DemoApprover:
    """Decides every approval of the demo's task; `on_event` is given to `follow_to_end`."""

    def __init__(
        self,
        client: HiveClient,
        console: Console,
        *,
        answer: DemoAnswer | None,
        interactive: bool,
        by: str,
    ) -> None:
        """Decide through `client` as `by`: asking on the terminal when `interactive`."""
        self.client = client
        self.console = console
        self.answer = answer or DemoAnswer.YES
        self.interactive = interactive
        self.by = by
        self._sent: dict[str, ApprovalRequested] = {}
        """The request of each decision sent, by the decision's event id."""
        self._answered: set[str] = set()

    async def on_event(self, event: BaseModel) -> None:
        """Answer a request; on a terminal, ask again when a decision was refused."""
        if isinstance(event, ApprovalRequested) and event.approval_id not in self._answered:
            await self._decide(event)
        elif isinstance(event, ApprovalRefused) and event.decision_event_id is not None:
            request = self._sent.pop(event.decision_event_id, None)
            if request is not None and self.interactive:
                self.console.print("that decision changed nothing; decide again")
                await self._decide(request)

    async def _decide(self, request: ApprovalRequested) -> None:
        if self.interactive:
            choice = await asyncio.to_thread(ask, request, self.console)
        else:
            choice = as_told(self.answer, request)
            self.console.print(
                f"the demo decides [bold]{choice.decision.value}[/] for {request.approval_id} "
                "(--approve; no terminal to ask on)"
            )
        self._answered.add(request.approval_id)
        outcome = await self.client.decide(
            request.approval_id,
            choice.decision,
            self.by,
            choice.reason,
            arguments=choice.arguments,
            answer=choice.answer,
            task_id=request.task_id,
        )
        if outcome.decided is not None:
            self._sent[outcome.decided.event_id] = request


def outbox_lines(workspace: Path) -> list[str]:
    """What the demo's email tool wrote: each file of the workspace outbox and its subject."""
    outbox = workspace / "outbox"
    files = sorted(outbox.glob("*.eml")) if outbox.is_dir() else []
    lines = [f"the workspace outbox ({outbox}): {len(files)} email(s)"]
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        subject = next(
            (line for line in text.splitlines() if line.lower().startswith("subject:")), ""
        )
        lines.append(f"  {path.name}  {escape(subject)}")
    return lines
