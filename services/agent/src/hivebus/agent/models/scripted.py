"""`scripted:<file>`: a deterministic model that replays a YAML list of turns.

Entries:
    {text: ...}                    a final answer
    {tool: NAME, args: {...}}      a tool call
    {calls: [{tool: NAME, args: {...}}, ...]}
                                   several tool calls in one answer (ids call_<turn>_<n>)
    {error: KIND}                  the call fails: rate_limit (429), overloaded (529),
                                   server_error (500), timeout, connection (all retryable),
                                   or bad_request (400, not retryable); `retry_after_s` optional
    {then: repeat}                 as the last entry: repeat the entry before it forever
Any entry may carry `usage: {input_tokens, output_tokens}` and `delay_s` (answer that late).
An answer or tool-call entry may carry `after`, what the conversation must end with when it
plays: `after: [NAME, ...]` the results of those tool calls, in order (a runtime warning
after them may follow), or `after: user` a user message (a prompt or a correction). A
recording (`hivebus golden record`) writes it, so a replay that goes another way stops with
a `ScriptError` saying where, instead of answering a conversation the turn was not recorded
in.

Or, instead of one list, a mapping `{cases: [{when: TEXT, turns: [...]}, ...]}`: a run plays
the turns of the first case whose `when` its first prompt contains (a case without `when`
matches any), so one file can answer a first request and its correction differently.

The turn played is chosen by how many assistant turns the conversation already has, so a
resumed run continues where it was; error entries before a turn fail that many calls first.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hivebus.agent.errors import ModelError, ScriptError
from hivebus.agent.models.base import (
    ModelRequest,
    ModelResponse,
    ToolCall,
    TurnUsage,
    request_chars,
)
from hivebus.contracts import describe_validation_error
from hivebus.core.yamlfile import load_yaml

CHARS_PER_TOKEN = 4
"""Without a scripted `usage`, tokens are estimated as characters / 4 (deterministic)."""

ErrorKind = Literal[
    "rate_limit", "overloaded", "server_error", "timeout", "connection", "bad_request"
]

_ERRORS: dict[str, tuple[str, bool]] = {
    "rate_limit": ("429 rate limited", True),
    "overloaded": ("529 overloaded", True),
    "server_error": ("500 internal server error", True),
    "timeout": ("request timed out", True),
    "connection": ("connection refused", True),
    "bad_request": ("400 bad request", False),
}


class ScriptCall(BaseModel):
    """One tool call of an answer that makes several."""

    model_config = ConfigDict(extra="forbid")

    tool: str = Field(min_length=1)
    args: Any = Field(default_factory=dict)


class ScriptTurn(BaseModel):
    """One scripted entry: an answer, a tool call (or several), or an error."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    text: str | None = None
    tool: str | None = None
    args: Any = Field(default_factory=dict)
    calls: list[ScriptCall] | None = Field(default=None, min_length=1)
    error: ErrorKind | None = None
    retry_after_s: float | None = Field(default=None, ge=0)
    usage: TurnUsage | None = None
    delay_s: float = Field(default=0.0, ge=0, le=3600)
    after: Literal["user"] | list[str] | None = Field(
        default=None, description="What the conversation must end with when this turn plays."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> ScriptTurn:
        if sum(x is not None for x in (self.text, self.tool, self.calls, self.error)) != 1:
            msg = "each turn needs exactly one of `text`, `tool`, `calls` or `error`"
            raise ValueError(msg)
        if self.error is not None and self.after is not None:
            msg = "an `error` entry cannot carry `after` (the answer after it does)"
            raise ValueError(msg)
        return self


def _last_results(request: ModelRequest) -> list[str] | None:
    """The tools whose results came last, past any user message after them (a runtime warning)."""
    for message in reversed(request.messages):
        if message.role == "tool":
            return [o.name for o in message.tool_results]
        if message.role == "assistant":
            return None
    return None


def _conversation_end(request: ModelRequest) -> str:
    """What the conversation ends with, in the words of `after`."""
    last = request.messages[-1] if request.messages else None
    if last is None:
        return "nothing"
    if last.role == "tool":
        return "the results of " + ", ".join(o.name for o in last.tool_results)
    return "a user message" if last.role == "user" else "an assistant turn"


def _ends_as(request: ModelRequest, after: str | list[str]) -> bool:
    """Whether the conversation ends as `after` says (`user`, or those tools' results)."""
    last = request.messages[-1] if request.messages else None
    if after == "user":
        return last is not None and last.role == "user"
    return _last_results(request) == after


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")  # noqa: PLR2004
    return f"{n}{suffix}"


class Slot(BaseModel):
    """What one conversation position plays: errors first, then (maybe) an answer."""

    errors: list[ScriptTurn] = Field(default_factory=list)
    response: ScriptTurn | None = None


class Script(BaseModel):
    """A validated script, grouped into slots, and the entry repeated past its end (if any)."""

    slots: list[Slot]
    repeat: ScriptTurn | None = None
    cases: list[tuple[str | None, Script]] = Field(
        default_factory=list, description="Scripts chosen by the run's first prompt."
    )

    @property
    def turns(self) -> list[ScriptTurn]:
        """The answer or tool-call turns, in order."""
        return [slot.response for slot in self.slots if slot.response is not None]


def _parse_cases(data: dict[str, Any], source: str) -> Script:
    cases = data.get("cases")
    if set(data) != {"cases"} or not isinstance(cases, list) or not cases:
        raise ScriptError(f"script {source}: a mapping must be {{cases: [{{when, turns}}, ...]}}")
    parsed: list[tuple[str | None, Script]] = []
    for index, case in enumerate(cases, start=1):
        where = f"{source}, case {index}"
        if not isinstance(case, dict) or not set(case) <= {"when", "turns"} or "turns" not in case:
            raise ScriptError(f"script {where}: needs `turns` and may have `when`, nothing else")
        when = case.get("when")
        if when is not None and (not isinstance(when, str) or not when):
            raise ScriptError(f"script {where}: `when` must be a non-empty text")
        parsed.append((when, parse_script(case["turns"], where)))
    return Script(slots=[], cases=parsed)


def parse_script(data: Any, source: str) -> Script:
    """Validate script data; raise `ScriptError` that names the entry at fault."""
    if isinstance(data, dict):
        return _parse_cases(data, source)
    if not isinstance(data, list) or not data:
        raise ScriptError(f"script {source} must be a non-empty YAML list of turns (or cases)")
    repeat = data[-1] == {"then": "repeat"}
    entries = data[:-1] if repeat else data
    if repeat and not entries:
        raise ScriptError(f"script {source}: `then: repeat` needs a turn before it")
    slots: list[Slot] = [Slot()]
    turns: list[ScriptTurn] = []
    for index, entry in enumerate(entries, start=1):
        try:
            turn = ScriptTurn.model_validate(entry)
        except ValidationError as exc:
            problems = "; ".join(describe_validation_error(exc, "entry"))
            raise ScriptError(f"script {source}, turn {index}: {problems}") from exc
        turns.append(turn)
        if turn.error is not None:
            slots[-1].errors.append(turn)
        else:
            slots[-1].response = turn
            slots.append(Slot())
    if not slots[-1].errors:
        slots.pop()
    return Script(slots=slots, repeat=turns[-1] if repeat else None)


def load_script(path: Path) -> Script:
    """Read and validate a script file."""
    return parse_script(load_yaml(path, what="script", error=ScriptError), str(path))


def _estimate(request: ModelRequest) -> int:
    return request_chars(request) // CHARS_PER_TOKEN + 1


class ScriptedModel:
    """Replays a script; raises `ScriptError` when the run asks for more turns than it holds."""

    def __init__(self, route: str, script: Script) -> None:
        """Serve `script` under the name `route`."""
        self.route = route
        self.script = script
        self._calls_at: dict[tuple[int, int], int] = {}

    def _choose(self, request: ModelRequest) -> tuple[int, Script]:
        """The script this run plays: the only one, or the first case its prompt matches."""
        if not self.script.cases:
            return 0, self.script
        prompt = next((m.text or "" for m in request.messages if m.role == "user"), "")
        for index, (when, script) in enumerate(self.script.cases, start=1):
            if when is None or when in prompt:
                return index, script
        wanted = ", ".join(repr(when) for when, _ in self.script.cases)
        raise ScriptError(f"{self.route}: no case matches the run's first prompt (cases: {wanted})")

    def _next(self, request: ModelRequest, *, consume: bool) -> ScriptTurn:
        case, script = self._choose(request)
        position = sum(1 for m in request.messages if m.role == "assistant")
        calls = self._calls_at.get((case, position), 0)
        if consume:
            self._calls_at[case, position] = calls + 1
        if position < len(script.slots):
            slot = script.slots[position]
            if calls < len(slot.errors):
                return slot.errors[calls]
            if slot.response is not None:
                return self._guarded(slot.response, position, request)
        if script.repeat is not None:
            return script.repeat
        raise ScriptError(
            f"{self.route}: the run asked the model a {_ordinal(position + 1)} time; the "
            f"script has {len(script.turns)} turn{'s' if len(script.turns) != 1 else ''} "
            "(add turns, or end the script with `then: repeat`)"
        )

    def _guarded(self, turn: ScriptTurn, position: int, request: ModelRequest) -> ScriptTurn:
        """`turn`, when the conversation ends as its `after` says; else a `ScriptError`."""
        if turn.after is None or _ends_as(request, turn.after):
            return turn
        wanted = (
            "a user message" if turn.after == "user" else "the results of " + ", ".join(turn.after)
        )
        raise ScriptError(
            f"{self.route}: turn {position + 1} was recorded after {wanted}; this run asks "
            f"it after {_conversation_end(request)}"
        )

    def _usage(self, turn: ScriptTurn, request: ModelRequest) -> TurnUsage:
        if turn.error is not None:
            return TurnUsage()
        if turn.usage is not None:
            return turn.usage
        if turn.text is not None:
            out_chars = len(turn.text)
        elif turn.calls is not None:
            out_chars = sum(len(c.tool) + len(str(c.args)) for c in turn.calls)
        else:
            out_chars = len(str(turn.tool)) + len(str(turn.args))
        return TurnUsage(
            input_tokens=_estimate(request), output_tokens=out_chars // CHARS_PER_TOKEN + 1
        )

    def usage_bound(self, request: ModelRequest) -> TurnUsage:
        """Exactly what the next turn will report (a scripted model knows)."""
        return self._usage(self._next(request, consume=False), request)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer with the turn at the position of this call in the conversation."""
        turn = self._next(request, consume=True)
        if turn.delay_s:
            await asyncio.sleep(turn.delay_s)
        if turn.error is not None:
            message, retryable = _ERRORS[turn.error]
            raise ModelError(
                f"{self.route}: {message}", retryable=retryable, retry_after_s=turn.retry_after_s
            )
        position = sum(1 for m in request.messages if m.role == "assistant")
        if turn.tool is not None:
            response = ModelResponse(
                tool_calls=[ToolCall(id=f"call_{position + 1}", name=turn.tool, args=turn.args)]
            )
        elif turn.calls is not None:
            response = ModelResponse(
                tool_calls=[
                    ToolCall(id=f"call_{position + 1}_{n}", name=c.tool, args=c.args)
                    for n, c in enumerate(turn.calls, start=1)
                ]
            )
        else:
            response = ModelResponse(text=turn.text)
        response.usage = self._usage(turn, request)
        return response
