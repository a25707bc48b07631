"""The parent link's byte budget (sync/bandwidth.py) on an injected clock: which limit is in force (windows), the
token bucket's rate, burst and lanes (a device's fill before the background sync), a new limit for a waiting
transfer, the rate meter, and the settings that configure it."""

from __future__ import annotations

import asyncio
import heapq
from datetime import datetime, timedelta, timezone

import pytest

from connected_registry.errors import ConfigInvalid
from connected_registry.settings import validate_desired
from connected_registry.sync.bandwidth import (BACKGROUND_SHARE, BURST_SECONDS, URGENT_HOLD_SECONDS, BandwidthPolicy,
                                               LinkBudget, Pacer, RateMeter)

NOON = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)  # a Tuesday
CHUNK = 64 << 10


def policy(limit: int = 0, *windows: dict) -> BandwidthPolicy:
    settings = validate_desired({"parent": {"endpoint": "parent:8000",
                                            "bandwidth": {"maxBytesPerSecond": limit, "windows": list(windows)}}})
    return BandwidthPolicy.from_settings(settings.parent.bandwidth)


BUSINESS_HOURS = {"schedule": "0 8 * * 1-5", "duration": "PT10H", "maxBytesPerSecond": 200_000}


# --- which limit is in force -------------------------------------------------------------------------------------

def test_without_windows_the_limit_holds_always_and_never_changes():
    assert policy(500_000).limit_at(NOON) == (500_000, None)
    assert policy().limit_at(NOON) == (0, None)


def test_inside_a_window_its_limit_holds_until_the_window_ends():
    limits = policy(0, BUSINESS_HOURS)
    assert limits.limit_at(NOON) == (200_000, NOON.replace(hour=18))
    assert limits.limit_at(NOON.replace(hour=18)) == (0, NOON.replace(hour=8) + timedelta(days=1))
    assert limits.limit_at(NOON.replace(hour=7, minute=59))[0] == 0


def test_an_unlimited_window_lifts_the_limit_inside_it():
    nights = policy(200_000, {"schedule": "0 22 * * *", "duration": "PT8H", "maxBytesPerSecond": 0})
    assert nights.limit_at(NOON.replace(hour=23)) == (0, NOON.replace(hour=6) + timedelta(days=1))
    assert nights.limit_at(NOON) == (200_000, NOON.replace(hour=22))


def test_where_windows_overlap_the_smallest_limit_holds():
    overlapping = policy(0, BUSINESS_HOURS, {"schedule": "0 11 * * *", "duration": "PT2H", "maxBytesPerSecond": 50_000},
                         {"schedule": "0 10 * * *", "duration": "PT4H", "maxBytesPerSecond": 0})
    assert overlapping.limit_at(NOON) == (50_000, NOON.replace(hour=13))
    assert overlapping.limit_at(NOON.replace(hour=13)) == (200_000, NOON.replace(hour=14))


# --- the token bucket ------------------------------------------------------------------------------------------

def simulate(pacer: Pacer, streams: dict[str, bool], seconds: float, start: float = 0.0,
             chunk: int = CHUNK) -> dict[str, int]:
    """Each stream (name -> urgent) reads a chunk as soon as the budget lets it, and pays for it after (as the
    downloads do); returns the bytes each moved in `seconds` of simulated time."""
    moved = dict.fromkeys(streams, 0)
    queue = [(start, name, None) for name in streams]
    heapq.heapify(queue)
    while queue:
        now, name, ticket = heapq.heappop(queue)
        if now >= start + seconds:
            break
        if ticket is not None and (wait := pacer.seconds_until(ticket, now)) > 0:
            heapq.heappush(queue, (now + min(wait, 0.25), name, ticket))
            continue
        moved[name] += chunk
        heapq.heappush(queue, (now, name, pacer.book(chunk, now, urgent=streams[name])))
    return moved


def test_a_stream_moves_the_rate_and_no_more():
    pacer = Pacer(0.0)
    pacer.set_rate(1_000_000, 0.0)
    moved = simulate(pacer, {"sync": False}, 10.0)["sync"]
    assert 0.97 * 10_000_000 <= moved <= 10_000_000 + BURST_SECONDS * 1_000_000 + CHUNK


def test_streams_side_by_side_share_the_rate():
    pacer = Pacer(0.0)
    pacer.set_rate(1_000_000, 0.0)
    moved = simulate(pacer, {"one": False, "two": False, "three": False}, 10.0)
    assert sum(moved.values()) <= 10_000_000 + BURST_SECONDS * 1_000_000 + 3 * CHUNK
    assert min(moved.values()) >= 0.3 * 10_000_000


def test_a_fill_a_device_waits_for_takes_the_budget_before_the_sync():
    pacer = Pacer(0.0)
    pacer.set_rate(1_000_000, 0.0)
    moved = simulate(pacer, {"sync": False, "fill": True}, 10.0)
    assert moved["fill"] >= (1 - BACKGROUND_SHARE) * 0.95 * 10_000_000
    assert 0 < moved["sync"] <= BACKGROUND_SHARE * 10_000_000 + 2 * CHUNK
    # once the fill is over, the sync has the whole link again
    assert simulate(pacer, {"sync": False}, 5.0, start=10.0 + URGENT_HOLD_SECONDS)["sync"] >= 0.95 * 5_000_000


def test_after_a_pause_only_a_small_burst_goes_at_once():
    pacer = Pacer(0.0)
    pacer.set_rate(1_000_000, 0.0)
    simulate(pacer, {"sync": False}, 1.0)
    assert simulate(pacer, {"sync": False}, 1.0, start=60.0)["sync"] <= 1_000_000 * (1 + BURST_SECONDS) + CHUNK


def test_a_new_rate_applies_to_a_booking_already_waiting():
    pacer = Pacer(0.0)
    pacer.set_rate(100_000, 0.0)
    pacer.book(1_000_000, 0.0)
    ticket = pacer.book(100_000, 0.0)
    assert pacer.seconds_until(ticket, 1.0) == pytest.approx(10.0, abs=0.01)
    pacer.set_rate(1_000_000, 1.0)  # what is owed is paid at the new rate from now on
    assert pacer.seconds_until(ticket, 1.0) == pytest.approx(1.0, abs=0.01)
    pacer.set_rate(0, 1.0)
    assert pacer.seconds_until(ticket, 1.0) == 0


def test_bytes_charged_without_waiting_delay_the_next_booking():
    pacer = Pacer(0.0)
    pacer.set_rate(1_000_000, 0.0)
    pacer.charge(2_000_000, 0.0)
    assert pacer.seconds_until(pacer.book(CHUNK, 0.0), 0.0) == pytest.approx(2.0 + CHUNK / 1e6, abs=0.01)


def test_the_meter_averages_the_last_seconds():
    meter = RateMeter()
    for tenth in range(30):  # 3 s at 1 MB/s
        meter.add(100_000, tenth / 10)
    assert meter.rate(2.95) == pytest.approx(1_000_000, rel=0.1)
    assert meter.rate(10.0) == 0


# --- the budget transfers await --------------------------------------------------------------------------------

class Clocks:
    def __init__(self, moment: datetime) -> None:
        self.wall, self.steady = moment.timestamp(), 0.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.steady += seconds


def test_a_window_changes_the_limit_at_its_start_and_the_figures_show_it():
    clocks = Clocks(NOON.replace(hour=7, minute=59, second=59))
    budget = LinkBudget(policy(0, BUSINESS_HOURS), clock=lambda: clocks.wall, monotonic=lambda: clocks.steady)
    assert budget.limit == 0 and budget.chunk_bytes() is None
    clocks.advance(1.0)
    assert budget.limit == 200_000 and budget.chunk_bytes() == 10_000 and budget.pacer.rate == 200_000
    budget.charge(300_000, "sent")
    assert budget.document() == {"effective": 200_000, "currentBytesPerSecond": 150_000, "bytesReceived": 0,
                                 "bytesSent": 300_000}
    clocks.advance(-3600)  # the clock went back: the limit is looked up again
    assert budget.limit == 0


async def test_a_transfer_waiting_for_the_budget_goes_at_once_when_the_limit_is_lifted():
    budget = LinkBudget(policy(1000))
    budget.charge(10_000, "received")  # well over the burst: the next chunk waits some 10 s
    waiting = asyncio.ensure_future(budget.spend(10_000, "received"))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    budget.follow(policy(0))
    async with asyncio.timeout(1):
        await waiting
    assert budget.bytes == {"received": 20_000, "sent": 0}


# --- the settings ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bandwidth, problem", [
    ({"maxBytesPerSecond": -1}, "greater than or equal to 0"),
    ({"maxBytesPerSecond": 10}, "use 0 for no limit, or at least 1000"),
    ({"maxBytesPerSecond": "200000"}, "valid integer"),
    ({"windows": [{"schedule": "0 25 * * *", "duration": "PT1H", "maxBytesPerSecond": 0}]}, "cron"),
    ({"windows": [{"schedule": "0 8 * * *", "duration": "PT10S", "maxBytesPerSecond": 0}]}, "allowed PT1M to P7D"),
    ({"windows": [{"schedule": "0 8 * * *", "duration": "PT1H"}]}, "maxBytesPerSecond: Field required"),
])
def test_a_bad_bandwidth_setting_is_refused_naming_the_field(bandwidth, problem):
    with pytest.raises(ConfigInvalid) as refused:
        validate_desired({"parent": {"endpoint": "parent:8000", "bandwidth": bandwidth}})
    assert "parent.bandwidth." in str(refused.value.problems) and problem in str(refused.value.problems)
