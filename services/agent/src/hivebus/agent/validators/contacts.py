"""Contact details the agent did not see: email addresses and phone numbers found in no source.

A model asked for a contact tends to invent a plausible one. Every email address and phone
number in the output is compared with the sources (prompt, inputs, dependency outputs, tool
outputs); one that appears in none is replaced by `[unverified contact removed]` and flagged.

Emails compare lower-cased. Phones compare by their digits only, so "+1 (555) 010-0199" in
the output matches "555.010.0199" in a tool result: a number counts as seen when its digits,
or its last ten digits, or its digits without a national trunk `0`, occur within a run of
digits in a source. Phone detection wants a phone's shape, so years, prices, dates, IP
addresses, version strings and order numbers are left alone:

- `+` and 7-15 digits, grouped or not: "+44 20 7946 0958", "+15550100199";
- an area code in parentheses: "(555) 010-0199";
- three or more groups with one separator: "555-010-0199", "020 7946 0958", "01 23 45 67 89";
- two groups with a trunk `0`: "020 79460958";
- any 7-15 digits right after a label such as "phone:", "tel:", "call".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hivebus.agent.validators import ValidationContext, ValidationResult, map_strings

__all__ = ["PLACEHOLDER", "contact_details"]

PLACEHOLDER = "[unverified contact removed]"

MIN_PHONE_DIGITS = 7
MAX_PHONE_DIGITS = 15  # E.164
LOCAL_NUMBER_DIGITS = 10  # the tail that identifies a number without its country code
_MIN_LAST_GROUP = 2  # "978-3-16-148410-0" ends in one digit: an ISBN, not a phone
_TRUNK_FORM_GROUPS = 2  # "020 79460958": a trunk 0, then the number
_SUBSCRIBER_GROUP = 3  # "10 20 30 40" has no group of three digits: a list, not a phone

_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w.%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}(?![\w-])"
)
# A maximal run of digits, parentheses and single separators, not glued to a word, a number,
# a path or an address; `_looks_like_phone` decides whether it is a phone number.
_RUN = re.compile(r"(?<![\w.,/+@-])\+?\(?[0-9](?:[0-9()]|[ .-](?=[0-9(]))*")
_OPEN_GROUP = re.compile(r"\([0-9]{1,5}\)")
_CLOSE_GROUP = re.compile(r"\([0-9]{1,5}\)$")
_TOKEN = re.compile(r"\+|\([0-9]{1,5}\)|[0-9]+|[ .-]")
_AFTER_NOT_PHONE = re.compile(r"[\w@]|[.,-]\w")
_LABEL = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|cell|fax|call|whatsapp)"
    r"(?:\s*(?:no\.?|number|#))?\W{0,3}$"
)
_LABEL_WINDOW = 30
_DATE = re.compile(
    r"[0-9]{4}([-./ ])[0-9]{1,2}\1[0-9]{1,2}|[0-9]{1,2}([-./ ])[0-9]{1,2}\2(?:[0-9]{2}|[0-9]{4})"
)
_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_THOUSANDS = re.compile(r"[1-9][0-9]{0,2}([ .])[0-9]{3}(?:\1[0-9]{3})*")
_SOURCE_DIGITS = re.compile(r"[0-9](?:[0-9\s().+-]*[0-9])?")
_NOT_DIGIT = re.compile(r"[^0-9]")
_JSON_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")  # "\u00a0" in a tool output dumped as ASCII


@dataclass(frozen=True)
class _Shape:
    """A run of digits parsed into groups: `+`, groups with parenthesised flags, separators."""

    plus: bool
    groups: tuple[str, ...]
    parenthesised: tuple[bool, ...]
    separators: tuple[str, ...]

    @property
    def digits(self) -> str:
        """The digits alone, as compared with the sources."""
        return "".join(self.groups)

    @property
    def plain(self) -> str:
        """The groups and separators, as written, when no group is parenthesised."""
        parts = [self.groups[0]]
        for sep, group in zip(self.separators, self.groups[1:], strict=True):
            parts += [sep, group]
        return "".join(parts)


def _parse(run: str) -> _Shape | None:
    """Split a run into groups; None when it has a stray parenthesis or separator."""
    tokens = _TOKEN.findall(run)
    if "".join(tokens) != run:
        return None
    plus = bool(tokens) and tokens[0] == "+"
    groups: list[str] = []
    parenthesised: list[bool] = []
    separators: list[str] = []
    pending = ""
    for token in tokens[1:] if plus else tokens:
        if token in {" ", ".", "-"}:
            if pending or not groups:
                return None
            pending = token
            continue
        paren = token.startswith("(")
        if groups and not pending and not (paren or parenthesised[-1]):
            return None
        if groups:
            separators.append(pending)
        groups.append(token.strip("()"))
        parenthesised.append(paren)
        pending = ""
    if not groups or pending:
        return None
    return _Shape(plus, tuple(groups), tuple(parenthesised), tuple(separators))


def _trim(run: str) -> tuple[int, int]:
    """Offsets of `run` without a stray `(` at its start or `)` at its end: "(555-010-0199)"."""
    start, end = 0, len(run)
    if run.startswith("(") and not _OPEN_GROUP.match(run):
        start = 1
    if run.endswith(")") and not _CLOSE_GROUP.search(run, start):
        end -= 1
    return start, end


def _looks_like_phone(shape: _Shape, *, labelled: bool) -> bool:  # noqa: PLR0911 - one rule per return
    """Whether a parsed run has a phone number's shape (see the module docstring)."""
    digits = shape.digits
    if not MIN_PHONE_DIGITS <= len(digits) <= MAX_PHONE_DIGITS or shape.parenthesised[-1]:
        return False
    if shape.plus:
        return True
    if not any(shape.parenthesised):
        plain = shape.plain
        if any(rule.fullmatch(plain) for rule in (_DATE, _IPV4, _THOUSANDS)):
            return False
    if labelled:
        return True
    if any(shape.parenthesised):
        return len(shape.groups) > 1  # an area code and a number
    if len(set(shape.separators)) != 1 or len(shape.groups[-1]) < _MIN_LAST_GROUP:
        return False
    if len(shape.groups) == _TRUNK_FORM_GROUPS:
        return shape.separators[0] in {" ", "-"} and digits.startswith("0")
    return digits.startswith("0") or any(len(g) >= _SUBSCRIBER_GROUP for g in shape.groups)


def _phone_keys(digits: str) -> set[str]:
    """The digit strings that identify a number: as written, without trunk 0 or country code."""
    keys = {digits}
    if digits.startswith("0"):
        keys.add(digits[1:])
    if len(digits) > LOCAL_NUMBER_DIGITS:
        keys.add(digits[-LOCAL_NUMBER_DIGITS:])
    return {key for key in keys if len(key) >= MIN_PHONE_DIGITS}


@dataclass(frozen=True)
class _Seen:
    """The contact details in the sources, normalised once per call."""

    emails: frozenset[str]
    digits: str  # every run of digits in the sources, separators removed, joined by "|"

    @classmethod
    def of(cls, sources: Iterable[str]) -> _Seen:
        emails: set[str] = set()
        runs: list[str] = []
        for raw in sources:
            source = _JSON_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), raw)
            emails.update(match.group().lower() for match in _EMAIL.finditer(source))
            runs.extend(_NOT_DIGIT.sub("", m.group()) for m in _SOURCE_DIGITS.finditer(source))
        return cls(frozenset(emails), "|".join(runs))

    def has_email(self, email: str) -> bool:
        return email.lower() in self.emails

    def has_phone(self, digits: str) -> bool:
        return any(key in self.digits for key in _phone_keys(digits))


def _replace_emails(text: str, seen: _Seen, flags: list[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        email = match.group()
        if seen.has_email(email):
            return email
        flags.append(f"contact: replaced email address not found in any source: {email}")
        return PLACEHOLDER

    return _EMAIL.sub(replace, text)


def _replace_phones(text: str, seen: _Seen, flags: list[str]) -> str:
    parts: list[str] = []
    done = 0
    for match in _RUN.finditer(text):
        offset, stop = _trim(match.group())
        start, end = match.start() + offset, match.start() + stop
        shape = _parse(text[start:end])
        if shape is None or _AFTER_NOT_PHONE.match(text, end):
            continue
        labelled = _LABEL.search(text[max(0, start - _LABEL_WINDOW) : start]) is not None
        if not _looks_like_phone(shape, labelled=labelled) or seen.has_phone(shape.digits):
            continue
        phone = text[start:end]
        flags.append(f"contact: replaced phone number not found in any source: {phone}")
        parts += [text[done:start], PLACEHOLDER]
        done = end
    parts.append(text[done:])
    return "".join(parts)


def contact_details(output: Any, context: ValidationContext) -> ValidationResult:
    """Replace every email address and phone number that appears in no source, and flag it."""
    seen = _Seen.of(context.sources)
    flags: list[str] = []

    def check(text: str) -> str:
        return _replace_phones(_replace_emails(text, seen, flags), seen, flags)

    rewritten = map_strings(output, check)
    return ValidationResult(output=rewritten, flags=tuple(dict.fromkeys(flags)))
