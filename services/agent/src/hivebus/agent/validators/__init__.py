"""Output validators: checks that run on an agent's output before it leaves the agent.

A validator is a function `(output, context) -> ValidationResult`. It may rewrite the output
(replace an invented phone number, redact a key) and reports what it found as human-readable
flags that never repeat a secret. Roles name validators as `module:function`, like tools:

    hivebus.agent.validators.contacts:contact_details   contact details found in no source
    hivebus.agent.validators.secrets:secrets            API keys, tokens, private keys

Validators walk structured output: strings, and recursively dict values and list items (keys
are left as they are); other values pass through unchanged. `map_strings` does that walk.

AgentError
└── ValidatorDefinitionError    a validator reference cannot be imported or is not a validator
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

from hivebus.agent.errors import AgentError
from hivebus.core import get_logger
from hivebus.core.loader import load_reference

__all__ = [
    "OutputValidator",
    "ValidationContext",
    "ValidationResult",
    "ValidatorDefinitionError",
    "load_validator",
    "map_strings",
    "run_validators",
]

log = get_logger(__name__)

MAX_FAILURE_MESSAGE = 200  # characters of a validator's exception kept in its failure flag


class ValidatorDefinitionError(AgentError):
    """A validator cannot be loaded or is declared wrongly; the message names it and the fix."""


@dataclass(frozen=True)
class ValidationContext:
    """What the agent was given or saw, for validators that check output against it."""

    sources: tuple[str, ...] = ()
    """Every text: the prompt, inputs, dependency outputs, each tool output as JSON text."""


@dataclass(frozen=True)
class ValidationResult:
    """A validator's verdict: the output (possibly rewritten) and what it found."""

    output: Any
    """The output to pass on; the input itself when nothing needed changing."""
    flags: tuple[str, ...] = ()
    """Human-readable findings, e.g. "secret: redacted an Anthropic API key"; never a secret."""


OutputValidator: TypeAlias = Callable[[Any, ValidationContext], ValidationResult]


def map_strings(value: Any, rewrite: Callable[[str], str]) -> Any:
    """Apply `rewrite` to every string in `value`: itself, dict values, list items, recursively.

    Dict keys and every other type are left as they are; dicts and lists are copied, never
    changed in place.
    """
    if isinstance(value, str):
        return rewrite(value)
    if isinstance(value, dict):
        return {key: map_strings(item, rewrite) for key, item in value.items()}
    if isinstance(value, list):
        return [map_strings(item, rewrite) for item in value]
    return value


def load_validator(ref: str) -> OutputValidator:
    """Import `module:function` and check it can be called as `(output, context)`."""
    obj = load_reference(ref, what="validator", error=ValidatorDefinitionError)
    if not callable(obj):
        raise ValidatorDefinitionError(
            f"{ref!r} is a {type(obj).__name__}, not a function (output, context) -> "
            "ValidationResult"
        )
    try:
        signature = inspect.signature(obj)
    except (ValueError, TypeError):  # some builtins have no signature: trust the reference
        return cast("OutputValidator", obj)
    try:
        signature.bind(None, ValidationContext())
    except TypeError as exc:
        raise ValidatorDefinitionError(
            f"validator {ref!r} must accept two positional arguments (output, context): {exc}"
        ) from exc
    return cast("OutputValidator", obj)


def _name(validator: OutputValidator) -> str:
    module = getattr(validator, "__module__", None)
    qualname = getattr(validator, "__qualname__", None)
    if module and qualname:
        return f"{module}:{qualname}"
    return repr(validator)


def _failure_flag(name: str, exc: Exception) -> str:
    # Imported here because `secrets` imports this package; a validator's error may quote the
    # output it was reading, and flags never carry a secret.
    from hivebus.agent.validators.secrets import redact_secrets  # noqa: PLC0415 - import cycle

    message = str(redact_secrets(str(exc)))
    if len(message) > MAX_FAILURE_MESSAGE:
        message = message[:MAX_FAILURE_MESSAGE] + "…"
    detail = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return f"validator {name} failed: {detail}; its output was not used"


def run_validators(
    output: Any, validators: Iterable[OutputValidator], context: ValidationContext
) -> ValidationResult:
    """Apply validators in order, each to the previous one's output, and collect their flags.

    A validator that raises, or returns something other than a `ValidationResult`, never stops
    the others: its failure becomes a flag and the output it was given passes on unchanged.
    Validators must not change their input in place.
    """
    flags: list[str] = []
    for validator in validators:
        name = _name(validator)
        try:
            result = validator(output, context)
        except Exception as exc:  # noqa: BLE001 - validator code may raise anything; it never escapes
            log.warning("validator_raised", validator=name, error=type(exc).__name__)
            flags.append(_failure_flag(name, exc))
            continue
        if not isinstance(result, ValidationResult):
            log.warning("validator_bad_result", validator=name, result=type(result).__name__)
            flags.append(
                f"validator {name} failed: returned {type(result).__name__}, "
                "not a ValidationResult; its output was not used"
            )
            continue
        output = result.output
        flags.extend(result.flags)
    return ValidationResult(output=output, flags=tuple(flags))
