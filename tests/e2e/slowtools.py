"""A tool for crash tests: it takes a while, so a process can be killed while work is running."""

from __future__ import annotations

import asyncio

from hivebus.agent import tool


@tool(tier="read", timeout_s=30.0)
async def pause(seconds: float) -> str:
    """Wait for the given number of seconds, then say so."""
    await asyncio.sleep(seconds)
    return f"waited {seconds}s"
