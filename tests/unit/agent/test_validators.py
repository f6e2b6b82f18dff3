"""Output validators: invented contact details are removed, secrets never leave the agent."""

from __future__ import annotations

import json
import re
import string
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hivebus.agent.errors import AgentError
from hivebus.agent.validators import (
    ValidationContext,
    ValidationResult,
    ValidatorDefinitionError,
    load_validator,
    map_strings,
    run_validators,
)
from hivebus.agent.validators.contacts import PLACEHOLDER as REMOVED
from hivebus.agent.validators.contacts import contact_details
from hivebus.agent.validators.secrets import PLACEHOLDER as REDACTED
from hivebus.agent.validators.secrets import redact_secrets, secrets

HYPOTHESIS = settings(max_examples=200, deadline=None)
NO_SOURCES = ValidationContext()
ANTHROPIC_KEY = "sk-ant-api03-" + "Xy7_kP2-" * 8
SECRETS = {
    "an Anthropic API key": ANTHROPIC_KEY,
    "an OpenAI-style API key": "sk-proj-" + "a1B2c3D4e5" * 4,
    "an AWS access key id": "AKIAIOSFODNN7EXAMPLE",
    "a GitHub token": "ghp_" + "a1B2c3D4e5F6" * 3,
    "a Slack token": "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "a JWT": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
}


def tool_output(data: Any) -> str:
    """A tool result as the agent records it among its sources: JSON text."""
    return json.dumps({"ok": True, "data": data})


def sources(*texts: str) -> ValidationContext:
    """A validation context whose sources are `texts`."""
    return ValidationContext(sources=texts)


# contact details


def test_invented_phone_number_is_replaced_and_flagged() -> None:
    """A phone number that appears in no source is replaced by the placeholder and flagged."""
    context = sources("Find the support line of Acme.", tool_output({"company": "Acme"}))

    result = contact_details("Call Acme on +1 555 0100 today.", context)

    assert result.output == f"Call Acme on {REMOVED} today."
    assert result.flags == ("contact: replaced phone number not found in any source: +1 555 0100",)


def test_phone_number_seen_in_a_tool_output_is_kept() -> None:
    """The same phone number, present in a tool output, passes unchanged and unflagged."""
    context = sources("Find the support line of Acme.", tool_output({"phone": "+1 555 0100"}))

    result = contact_details("Call Acme on +1 555 0100 today.", context)

    assert result == ValidationResult("Call Acme on +1 555 0100 today.", ())


def test_invented_email_is_replaced_and_a_seen_one_kept_whatever_its_case() -> None:
    """Emails compare case-insensitively: a seen one is kept as written, an unseen one removed."""
    context = sources(tool_output({"contact": "Support@Acme.example"}))

    result = contact_details("Write to support@acme.EXAMPLE or sales@acme.example.", context)

    assert result.output == f"Write to support@acme.EXAMPLE or {REMOVED}."
    assert result.flags == (
        "contact: replaced email address not found in any source: sales@acme.example",
    )


PHONES = ["+1 (555) 010-0199", "555-010-0199", "+44 20 7946 0958", "020 7946 0958"]


@pytest.mark.parametrize("phone", PHONES)
def test_phone_formats_are_detected(phone: str) -> None:
    """Each common phone format is recognised, replaced and flagged when no source has it."""
    result = contact_details(f"Reach us at {phone}, any day.", NO_SOURCES)

    assert result.output == f"Reach us at {REMOVED}, any day."
    assert result.flags == (f"contact: replaced phone number not found in any source: {phone}",)


@pytest.mark.parametrize(
    ("phone", "seen_as"),
    [
        ("+1 (555) 010-0199", "555.010.0199"),
        ("555-010-0199", "+1 (555) 010 0199"),
        ("+44 20 7946 0958", "020-7946-0958"),
        ("020 7946 0958", "+44 (0)20 7946 0958"),
    ],
)
def test_phones_compare_by_digits_not_format(phone: str, seen_as: str) -> None:
    """A phone written differently in a source (separators, country code, trunk 0) is kept."""
    text = f"Reach us at {phone}."

    assert contact_details(text, sources(tool_output({"tel": seen_as}))) == ValidationResult(
        text, ()
    )


def test_sources_dumped_as_ascii_json_still_count() -> None:
    """Contacts in a tool output dumped as ASCII JSON (no-break spaces, accents) are seen."""
    data = {"tel": "+44\u00a020\u00a07946\u00a00958", "mail": "jos\u00e9@acme.example"}
    text = "Call +44 20 7946 0958 or write to jos\u00e9@acme.example."

    result = contact_details(text, sources(json.dumps(data)))

    assert result == ValidationResult(text, ())


@pytest.mark.parametrize(
    "text",
    [
        "in 2026",
        "costs 1,299.00",
        "2026-11-22",
        "v1.2.3",
        "order 12345",
        "shipped 2026-11-22 at 1,299.00 each, order 12345, build v1.2.3",
        "the server at 192.168.100.200",
        "1 000 000 visitors",
        "pages 1000-2000",
        "ISBN 978-3-16-148410-0",
        "22.11.2026",
        "https://example.com/items/5550100199",
    ],
)
def test_ordinary_numbers_are_not_phones(text: str) -> None:
    """Years, prices, dates, versions, addresses and identifiers are left alone and unflagged."""
    assert contact_details(text, NO_SOURCES) == ValidationResult(text, ())


def test_a_labelled_digit_run_is_a_phone() -> None:
    """Digits with no phone shape still count as a phone right after a label like 'Tel:'."""
    result = contact_details("Tel: 5550100199, order 5550100199", NO_SOURCES)

    assert result.output == f"Tel: {REMOVED}, order 5550100199"


def test_structured_output_is_walked_for_contacts() -> None:
    """Dict values and list items are checked at any depth; keys and non-strings are untouched."""
    output = {
        "555-010-0199": "key, not checked",
        "people": [{"name": "Ann", "email": "ann@acme.example", "age": 41}, "x@y.example"],
        "phones": ["555-010-0199", None, 5550100199],
    }

    result = contact_details(output, sources("Ann <ann@acme.example>"))

    assert result.output == {
        "555-010-0199": "key, not checked",
        "people": [{"name": "Ann", "email": "ann@acme.example", "age": 41}, REMOVED],
        "phones": [REMOVED, None, 5550100199],
    }
    assert len(result.flags) == 2
    assert output["phones"] == ["555-010-0199", None, 5550100199]  # the input is not changed


def test_each_finding_is_flagged_once() -> None:
    """An invented contact repeated in the output is replaced everywhere and flagged once."""
    result = contact_details(["555-010-0199", "call 555-010-0199"], NO_SOURCES)

    assert result.output == [REMOVED, f"call {REMOVED}"]
    assert len(result.flags) == 1


# secrets


@pytest.mark.parametrize(("kind", "secret"), SECRETS.items())
def test_each_secret_kind_is_redacted_and_flagged_without_its_value(kind: str, secret: str) -> None:
    """Each kind of key or token is replaced, and the flag names its kind, never its value."""
    result = secrets(f"the credential is {secret} - keep it safe", NO_SOURCES)

    assert result.output == f"the credential is {REDACTED} - keep it safe"
    assert result.flags == (f"secret: redacted {kind}",)
    assert not any(secret in flag for flag in result.flags)


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        (
            "Authorization: Bearer abcDEF0123456789ghiJKL",
            f"Authorization: Bearer {REDACTED}",
            "a bearer token",
        ),
        ("api_key=Zq8rT2vW9xY4", f"api_key={REDACTED}", "a credential assigned to 'api_key'"),
        (
            '{"password": "correct-horse-battery"}',
            f'{{"password": "{REDACTED}"}}',
            "a credential assigned to 'password'",
        ),
        ("token: 9f8e7d6c5b4a3210", f"token: {REDACTED}", "a credential assigned to 'token'"),
        (
            "export GITHUB_TOKEN=abc123def456",
            f"export GITHUB_TOKEN={REDACTED}",
            "a credential assigned to 'GITHUB_TOKEN'",
        ),
    ],
)
def test_labelled_secrets_keep_their_label(text: str, expected: str, kind: str) -> None:
    """For `Bearer` and `name=value` only the value is redacted; the flag names the kind."""
    result = secrets(text, NO_SOURCES)

    assert result.output == expected
    assert result.flags == (f"secret: redacted {kind}",)


def test_private_key_blocks_are_redacted_whole_even_when_cut_off() -> None:
    """A PEM private key is redacted from BEGIN to END, or to its last line in partial output."""
    body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"
    block = f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"
    cut_off = f"-----BEGIN PRIVATE KEY-----\n{body}"

    complete = secrets(f"key:\n{block}\ndone", NO_SOURCES)
    partial = secrets(f"key:\n{cut_off}\n\nThat was all of it.", NO_SOURCES)

    assert complete.output == f"key:\n{REDACTED}\ndone"
    assert partial.output == f"key:\n{REDACTED}\n\nThat was all of it."
    assert complete.flags == partial.flags == ("secret: redacted a private key",)


@pytest.mark.parametrize(
    "text",
    [
        "max_tokens=100000000",
        "use a Bearer token",
        "password: hunter2",
        "the task-runner sk-learn",
        "tokens are counted per call",
    ],
)
def test_ordinary_text_is_not_a_secret(text: str) -> None:
    """Words like token and password, short values and counters are not redacted."""
    assert secrets(text, NO_SOURCES) == ValidationResult(text, ())


def test_secrets_are_redacted_even_when_a_source_holds_them() -> None:
    """A key the agent read in a file is still redacted: sources never excuse a secret."""
    result = secrets(f"found {ANTHROPIC_KEY}", sources(tool_output({"env": ANTHROPIC_KEY})))

    assert result.output == f"found {REDACTED}"


def test_redacting_twice_changes_nothing_more() -> None:
    """Redacted output passes a second redaction unchanged and without new flags."""
    once = secrets(f"api_key={ANTHROPIC_KEY} Bearer {ANTHROPIC_KEY}", NO_SOURCES)

    assert secrets(once.output, NO_SOURCES) == ValidationResult(once.output, ())


def test_redact_secrets_walks_nested_data() -> None:
    """`redact_secrets` scrubs dict values and list items at any depth and keeps the rest."""
    event = {
        "tool": "read_file",
        "result": {"lines": ["ok", f"KEY={ANTHROPIC_KEY}", 3], "AKIAIOSFODNN7EXAMPLE": True},
        "args": [[SECRETS["a GitHub token"]]],
    }

    assert redact_secrets(event) == {
        "tool": "read_file",
        "result": {"lines": ["ok", f"KEY={REDACTED}", 3], "AKIAIOSFODNN7EXAMPLE": True},
        "args": [[REDACTED]],
    }


def test_map_strings_copies_and_skips_other_types() -> None:
    """`map_strings` rewrites strings only, in new dicts and lists, leaving the input intact."""
    value = {"a": ["x", 1, None, ("t",)], "b": {"c": "y"}}

    result = map_strings(value, str.upper)

    assert result == {"a": ["X", 1, None, ("t",)], "b": {"c": "Y"}}
    assert value == {"a": ["x", 1, None, ("t",)], "b": {"c": "y"}}


# running and loading validators


def shout(output: Any, context: ValidationContext) -> ValidationResult:  # noqa: ARG001 - the validator signature
    """A validator that upper-cases every string and says so."""
    return ValidationResult(map_strings(output, str.upper), ("shout: upper-cased",))


def explode(output: Any, context: ValidationContext) -> ValidationResult:
    """A validator that always raises, quoting a secret in its message."""
    raise RuntimeError(f"cannot read {output!r} with {len(context.sources)} sources")


def not_a_result(output: Any, context: ValidationContext) -> Any:  # noqa: ARG001 - the validator signature
    """A validator that returns the bare output instead of a `ValidationResult`."""
    return "oops"


def test_run_validators_chains_in_order_and_collects_flags() -> None:
    """Each validator receives the previous one's output; flags accumulate in order."""
    result = run_validators(
        f"call 555-010-0199 with {ANTHROPIC_KEY}", [contact_details, secrets, shout], NO_SOURCES
    )

    assert result.output == f"CALL {REMOVED.upper()} WITH {REDACTED.upper()}"
    assert result.flags == (
        "contact: replaced phone number not found in any source: 555-010-0199",
        "secret: redacted an Anthropic API key",
        "shout: upper-cased",
    )


def test_run_validators_survives_a_failing_validator() -> None:
    """A raising or ill-behaved validator becomes a flag; the output passes on unchanged."""
    result = run_validators(ANTHROPIC_KEY, [explode, not_a_result, secrets], NO_SOURCES)

    assert result.output == REDACTED
    assert result.flags[0].startswith(f"validator {__name__}:explode failed: RuntimeError:")
    assert ANTHROPIC_KEY not in result.flags[0]
    assert REDACTED in result.flags[0]
    assert result.flags[1] == (
        f"validator {__name__}:not_a_result failed: returned str, not a ValidationResult; "
        "its output was not used"
    )
    assert result.flags[2] == "secret: redacted an Anthropic API key"


def test_run_validators_without_validators_returns_the_output() -> None:
    """No validators means the output as given and no flags."""
    assert run_validators({"a": 1}, [], NO_SOURCES) == ValidationResult({"a": 1}, ())


def test_load_validator_imports_the_builtin_validators() -> None:
    """Built-in validators load by their `module:function` reference."""
    assert load_validator("hivebus.agent.validators.contacts:contact_details") is contact_details
    assert load_validator("hivebus.agent.validators.secrets:secrets") is secrets
    assert load_validator(f"{__name__}:shout") is shout


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("contact_details", "must look like 'package.module:function'"),
        ("hivebus.agent.validators.contacts:", "must look like 'package.module:function'"),
        ("no_such_package.validators:check", "cannot import validator module"),
        ("hivebus.agent.validators.secrets:nothing", "has no validator 'nothing'"),
        ("hivebus.agent.validators.secrets:PLACEHOLDER", "is a str, not a function"),
        ("os.path:basename", "must accept two positional arguments (output, context)"),
    ],
)
def test_load_validator_errors_say_what_is_wrong(ref: str, message: str) -> None:
    """A bad reference raises a `ValidatorDefinitionError` that names it and the problem."""
    with pytest.raises(ValidatorDefinitionError, match=re.escape(message)) as caught:
        load_validator(ref)

    assert isinstance(caught.value, AgentError)
    assert not caught.value.retryable


# properties

B64URL = string.ascii_letters + string.digits + "-_"
ALNUM = string.ascii_letters + string.digits


def _token(alphabet: str, min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=min_size, max_size=max_size)


PEM_BODY = st.lists(
    _token(string.ascii_letters + string.digits + "+/", 16, 64), min_size=1, max_size=4
).map("\n".join)
# Each strategy draws (text to embed, the secret that must not survive).
GENERATED_SECRETS: list[st.SearchStrategy[tuple[str, str]]] = [
    _token(B64URL, 16, 90).map(lambda s: ("sk-ant-api03-" + s,) * 2),
    st.tuples(st.sampled_from(["", "proj-", "svcacct-"]), _token(ALNUM, 20, 60)).map(
        lambda p: ("sk-" + "".join(p),) * 2
    ),
    _token(string.ascii_uppercase + string.digits, 16, 16).map(lambda s: ("AKIA" + s,) * 2),
    st.tuples(st.sampled_from(["ghp_", "gho_", "ghs_"]), _token(ALNUM, 36, 40)).map(
        lambda p: ("".join(p),) * 2
    ),
    _token(ALNUM + "_", 22, 82).map(lambda s: ("github_pat_" + s,) * 2),
    st.tuples(st.sampled_from("baprs"), _token(ALNUM + "-", 10, 60)).map(
        lambda p: (f"xox{p[0]}-{p[1]}",) * 2
    ),
    st.tuples(_token(B64URL, 4, 40), _token(B64URL, 4, 80), _token(B64URL, 0, 60)).map(
        lambda p: ("eyJ{}.{}.{}".format(*p),) * 2
    ),
    _token(ALNUM + "._~+/=-", 16, 60).map(lambda s: (f"Bearer {s}", s)),
    st.tuples(
        st.sampled_from(["api_key", "API-KEY", "apiKey", "token", "DB_PASSWORD", "secret"]),
        st.sampled_from(["=", ": ", " = ", '": "']),
        _token(ALNUM + "_-./+=", 8, 40),
    ).map(lambda p: ("".join(p), p[2])),
    st.tuples(st.sampled_from(["", "RSA ", "EC ", "OPENSSH "]), PEM_BODY).map(
        lambda p: (
            f"-----BEGIN {p[0]}PRIVATE KEY-----\n{p[1]}\n-----END {p[0]}PRIVATE KEY-----",
            p[1],
        )
    ),
]
SEPARATORS = st.sampled_from([" ", "\n", "\t", ", ", "(", ")", '"', "'"])


@HYPOTHESIS
@given(
    before=st.text(max_size=60),
    left=SEPARATORS,
    drawn=st.one_of(GENERATED_SECRETS),
    right=SEPARATORS,
    after=st.text(max_size=60),
)
def test_a_generated_secret_never_survives(
    before: str, left: str, drawn: tuple[str, str], right: str, after: str
) -> None:
    """Whatever text surrounds a secret of any kind, the validated output never contains it."""
    embedded, secret = drawn
    assume(secret not in before and secret not in after)  # only the embedded copy must go
    text = f"{before}{left}{embedded}{right}{after}"

    result = secrets(text, sources(text))

    assert secret not in result.output
    assert secret not in redact_secrets(text)
    assert result.flags
    assert not any(secret in flag for flag in result.flags)


NO_DIGITS_OR_AT = st.text(
    alphabet=st.characters(exclude_categories=("Nd", "Cs"), exclude_characters="@")
)


@HYPOTHESIS
@given(text=NO_DIGITS_OR_AT, seen=st.lists(st.text(), max_size=3))
def test_text_without_digits_or_at_passes_contact_checks_unchanged(
    text: str, seen: list[str]
) -> None:
    """Text with no digit and no '@' cannot hold a contact: it passes unchanged and unflagged."""
    assert contact_details(text, sources(*seen)) == ValidationResult(text, ())
