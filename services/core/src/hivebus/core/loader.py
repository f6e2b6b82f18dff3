"""The one loader of `package.module:name` references (tools, validators), by `pkgutil`."""

from __future__ import annotations

import pkgutil
import re

_REFERENCE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def load_reference(ref: str, *, what: str, error: type[Exception]) -> object:
    """Import what `ref` names; raise `error` saying what is wrong with it otherwise.

    `what` names the kind of thing in messages ("tool", "validator").
    """
    if _REFERENCE.fullmatch(ref) is None:
        raise error(f"{what} reference {ref!r} must look like 'package.module:function'")
    module_name, _, attr = ref.partition(":")
    try:
        return pkgutil.resolve_name(ref)
    except ImportError as exc:
        raise error(f"cannot import {what} module {module_name!r}: {exc}") from exc
    except AttributeError as exc:
        raise error(f"module {module_name!r} has no {what} {attr!r}") from exc
