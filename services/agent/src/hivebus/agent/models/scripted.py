"""`scripted:<file>`: a deterministic model that replays a YAML list of turns.

Each entry is `{text: ...}` (a final answer) or `{tool: NAME, args: {...}}` (a tool call), with an
optional `usage: {input_tokens, output_tokens}`. A last entry `{then: repeat}` repeats the turn
before it forever. The turn played is chosen by how many assistant turns the conversation already
has, so a resumed run continues where it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hivebus.agent.errors import ScriptError
from hivebus.agent.models.base import ModelRequest, ModelResponse, ToolCall, TurnUsage

CHARS_PER_TOKEN = 4
"""Without a scripted `usage`, tokens are estimated as characters / 4 (deterministic)."""


class ScriptTurn(BaseModel):
    """One scripted turn."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    tool: str | None = None
    args: Any = Field(default_factory=dict)
    usage: TurnUsage | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ScriptTurn:
        if (self.text is None) == (self.tool is None):
            msg = "each turn needs exactly one of `text` or `tool`"
            raise ValueError(msg)
        return self


class Script(BaseModel):
    """A validated script: its turns and whether the last one repeats forever."""

    turns: list[ScriptTurn]
    repeat_last: bool = False


def parse_script(data: Any, source: str) -> Script:
    """Validate script data; raise `ScriptError` that names the entry at fault."""
    if not isinstance(data, list) or not data:
        raise ScriptError(f"script {source} must be a non-empty YAML list of turns")
    repeat = data[-1] == {"then": "repeat"}
    entries = data[:-1] if repeat else data
    if repeat and not entries:
        raise ScriptError(f"script {source}: `then: repeat` needs a turn before it")
    turns = []
    for index, entry in enumerate(entries, start=1):
        try:
            turns.append(ScriptTurn.model_validate(entry))
        except ValidationError as exc:
            problems = "; ".join(err["msg"] for err in exc.errors())
            raise ScriptError(f"script {source}, turn {index}: {problems}") from exc
    return Script(turns=turns, repeat_last=repeat)


def load_script(path: Path) -> Script:
    """Read and validate a script file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScriptError(f"cannot read script {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ScriptError(f"script {path} is not valid YAML: {exc}") from exc
    return parse_script(data, str(path))


def _estimate(request: ModelRequest) -> int:
    chars = len(request.system)
    for message in request.messages:
        chars += len(message.text or "")
        chars += sum(len(str(c.args)) + len(c.name) for c in message.tool_calls)
        chars += sum(len(o.result.model_dump_json()) for o in message.tool_results)
    return chars // CHARS_PER_TOKEN + 1


class ScriptedModel:
    """Replays a script; raises `ScriptError` when the run asks for more turns than it holds."""

    def __init__(self, route: str, script: Script) -> None:
        """Serve `script` under the name `route`."""
        self.route = route
        self.script = script

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer with the turn at the position of this call in the conversation."""
        position = sum(1 for m in request.messages if m.role == "assistant")
        turns = self.script.turns
        if position >= len(turns):
            if not self.script.repeat_last:
                raise ScriptError(
                    f"{self.route} has {len(turns)} turns and the run asked for turn "
                    f"{position + 1}; add turns or end the script with `then: repeat`"
                )
            position = len(turns) - 1
        turn = turns[position]
        if turn.tool is not None:
            response = ModelResponse(
                tool_calls=[ToolCall(id=f"call_{position + 1}", name=turn.tool, args=turn.args)]
            )
            out_chars = len(turn.tool) + len(str(turn.args))
        else:
            response = ModelResponse(text=turn.text)
            out_chars = len(turn.text or "")
        response.usage = turn.usage or TurnUsage(
            input_tokens=_estimate(request), output_tokens=out_chars // CHARS_PER_TOKEN + 1
        )
        return response
