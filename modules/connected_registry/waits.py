"""Waiting with a deadline without losing a cancellation.

Python 3.11's `asyncio.wait_for` returns normally when what it awaits finishes in the same loop turn as a cancel of
the waiting task: the cancel is lost, and a loop around the wait goes on forever. In CI a `Runtime.stop` waited
300 s for the sync task that way (its report loop woke as it was cancelled). `asyncio.timeout` has no such flaw;
everything here waits through it.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], seconds: float) -> T:
    """`awaitable`'s result, or TimeoutError after `seconds`."""
    async with asyncio.timeout(seconds):
        return await awaitable


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """True once `event` is set, False when `seconds` pass first."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
        return True
    except TimeoutError:
        return False
