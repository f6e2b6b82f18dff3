"""Tools that misbehave on purpose, for the failure-mode examples."""

from __future__ import annotations

import time

from hivebus.agent import tool

FACTS = {
    "bees": "Honey bees visit about 2 million flowers for one pound of honey.",
    "support": "The support desk answers on +1 415 555 0100.",
}


@tool(tier="read", timeout_s=2.0)
def lookup(key: str) -> str:
    """Look up a short fact by key (for example 'bees' or 'support')."""
    return FACTS.get(key, f"no fact about {key!r}")


@tool(tier="read", timeout_s=0.5)
def slow_lookup(key: str) -> str:
    """Look up a fact from a slow archive."""
    time.sleep(5)
    return FACTS.get(key, "")


@tool(tier="read", timeout_s=2.0)
def explode(key: str) -> str:
    """Look up a fact from a broken archive."""
    msg = f"archive index corrupted near {key!r}"
    raise RuntimeError(msg)
