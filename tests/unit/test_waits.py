"""Waits with a deadline never lose a cancellation (Python 3.11's asyncio.wait_for does, see waits.py)."""

from __future__ import annotations

import asyncio

import pytest

from connected_registry.waits import wait_event, within


async def _stopped_in_time(task: asyncio.Task) -> bool:
    done, _ = await asyncio.wait({task}, timeout=5)
    return task in done and task.cancelled()


async def test_a_loop_cancelled_in_the_turn_its_event_is_set_stops():
    event, woken = asyncio.Event(), []

    async def loop_forever():  # the shape of the sync engine's report loop
        while True:
            event.clear()
            woken.append(await wait_event(event, 60))

    task = asyncio.create_task(loop_forever())
    await asyncio.sleep(0)  # the loop now waits on the event
    event.set()
    task.cancel()
    assert await _stopped_in_time(task)
    assert woken == []


async def test_wait_event_tells_a_set_event_from_a_timeout():
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 60) is True


async def test_within_gives_the_result_or_a_timeout_and_passes_a_cancel_on():
    async def answer():
        return 42

    assert await within(answer(), 5) == 42
    with pytest.raises(TimeoutError):
        await within(asyncio.Event().wait(), 0.01)

    finished = asyncio.Event()

    async def loop_forever():
        while True:
            finished.clear()
            await within(finished.wait(), 60)

    task = asyncio.create_task(loop_forever())
    await asyncio.sleep(0)
    finished.set()
    task.cancel()
    assert await _stopped_in_time(task)
