"""Secrets in output: API keys, tokens and private keys are redacted before anything leaves.

Every match becomes `[redacted secret]`, even when the secret appears in a source: a key the
agent read in a file must not travel further. Flags name the kind ("secret: redacted a GitHub
token"), never the value. For `Bearer <token>` and `name=value` assignments the label stays
("Authorization: Bearer [redacted secret]", "api_key=[redacted secret]") so a reader still
sees what was there.

Kinds, tried in this order so the most specific one names a match:
private key PEM blocks, Anthropic keys (`sk-ant-`), OpenAI-style keys (`sk-`), AWS access key
ids (`AKIA`/`ASIA`), GitHub tokens (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`),
Slack tokens (`xox[baprs]-`), JWTs, `Bearer` tokens, and values of 8 or more characters
assigned to a name ending in api_key, secret, token, password, passwd or pwd.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hivebus.agent.validators import ValidationContext, ValidationResult, map_strings

__all__ = ["PLACEHOLDER", "redact_secrets", "secrets"]

PLACEHOLDER = "[redacted secret]"


@dataclass(frozen=True)
class _Kind:
    """One kind of secret: how to find it and how to name it in a flag."""

    pattern: re.Pattern[str]
    describe: Callable[[re.Match[str]], str]
    keep_label: bool = False  # the pattern's `label` group stays; only `value` is redacted


def _named(description: str) -> Callable[[re.Match[str]], str]:
    return lambda _match: description


_KINDS = (
    _Kind(
        re.compile(
            # A complete block, or, in a partial output, the start of one and its base64 lines;
            # the search for END stops at the next BEGIN, so scanning stays linear.
            r"-----BEGIN [A-Z0-9 ]*?PRIVATE KEY(?: BLOCK)?-----"
            r"(?:(?:(?!-----BEGIN )(?s:.))*?-----END [A-Z0-9 ]*?PRIVATE KEY(?: BLOCK)?-----"
            r"|(?:(?:\s|\\n)+(?:[A-Za-z0-9+/=]{16,}|[A-Za-z0-9+/=]+(?=[ \t]*(?:[\r\n]|\\n|$))"
            r"|(?:Proc-Type|DEK-Info):[^\r\n\\]*))*)"
        ),
        _named("a private key"),
    ),
    _Kind(re.compile(r"(?<![\w-])sk-ant-[A-Za-z0-9_-]{16,}"), _named("an Anthropic API key")),
    _Kind(
        re.compile(r"(?<![\w-])sk-(?!ant-)[A-Za-z0-9_-]{20,}"), _named("an OpenAI-style API key")
    ),
    _Kind(
        re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])"),
        _named("an AWS access key id"),
    ),
    _Kind(
        re.compile(r"(?<![\w-])(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"),
        _named("a GitHub token"),
    ),
    _Kind(re.compile(r"(?<![\w-])xox[baprs]-[A-Za-z0-9-]{10,}"), _named("a Slack token")),
    _Kind(
        re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
        _named("a JWT"),
    ),
    _Kind(
        re.compile(r"(?P<label>\b(?i:bearer)\s+)(?P<value>(?!\[)[A-Za-z0-9._~+/=-]{16,})"),
        _named("a bearer token"),
        keep_label=True,
    ),
    _Kind(
        re.compile(
            r"(?P<label>(?<![\w.-])(?P<name>[\w.-]*?"
            r"(?i:api[_-]?key|apikey|secret|token|password|passwd|pwd))"
            r"[\"']?\s*[:=]\s*[\"']?)"
            r"(?P<value>(?![\[$<{%])[^\s\"'`,;]{8,})"
        ),
        lambda match: f"a credential assigned to {match.group('name')!r}",
        keep_label=True,
    ),
)


def _redact(text: str, found: list[str] | None = None) -> str:
    """Replace every secret in `text`; append the kind of each to `found` when given."""
    for kind in _KINDS:

        def replace(match: re.Match[str], kind: _Kind = kind) -> str:
            if found is not None:
                found.append(f"secret: redacted {kind.describe(match)}")
            return match.group("label") + PLACEHOLDER if kind.keep_label else PLACEHOLDER

        text = kind.pattern.sub(replace, text)
    return text


def redact_secrets(value: Any) -> Any:
    """Redact every secret in a string or, recursively, in dict values and list items."""
    return map_strings(value, _redact)


def secrets(output: Any, context: ValidationContext) -> ValidationResult:  # noqa: ARG001 - a secret is redacted whatever the sources say
    """Redact every secret in the output and flag each kind found, without its value."""
    found: list[str] = []
    rewritten = map_strings(output, lambda text: _redact(text, found))
    return ValidationResult(output=rewritten, flags=tuple(dict.fromkeys(found)))
