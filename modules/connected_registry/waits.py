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


async def until_set(work: Awaitable[T], event: asyncio.Event) -> asyncio.Future[T] | None:
    """Run `work` until it finishes (its future is returned, to read its result or error) or `event` is set
    first (`work` is cancelled and awaited: None)."""
    task = asyncio.ensure_future(work)
    interrupt = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({task, interrupt}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        interrupt.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
        if task.done() and not task.cancelled():
            task.exception()  # marked as read: when this wait is cancelled itself, nobody else asks for it
    return None if task.cancelled() else task
