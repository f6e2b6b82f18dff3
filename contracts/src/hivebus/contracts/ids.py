"""Identifier formats shared by every message: they end up in subjects and KV keys."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
"""Task and sub-task ids: safe as one NATS subject token and as part of a KV key."""

ROLE_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
"""Role names: lower case, safe as a subject token and a consumer name."""

Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
RoleName = Annotated[str, StringConstraints(pattern=ROLE_PATTERN)]

_ID_RE = re.compile(ID_PATTERN)


def is_identifier(value: str) -> bool:
    """Tell whether `value` is a valid task or sub-task id."""
    return bool(_ID_RE.fullmatch(value))
