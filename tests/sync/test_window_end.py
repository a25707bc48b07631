"""A large transfer cut by the window's end resumes in the next window without starting over (SPEC 7.4):
the parent sees a Range request, and the registry sync it belonged to is reported TimedOut, then recovered. The
link is slowed down on purpose so the window ends mid-blob."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp

from tests.sync.hierarchy import BOTH_TOP_TIERS, READER, WRITER
from tests.sync.inprocess import (FakeClock, basic_header, digest_at, eventually, forward, push_small_image,
                                  serve_on_free_port,
                                  set_clock, start_root_for_leaf, start_runtime)

pytestmark = BOTH_TOP_TIERS  # the parent's side on the embedded stores and as a scale-out replica

NINE = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
BLOB_BYTES = 8 << 20


async def start_slow_link(upstream: dict, blob_ranges: list):
    """Forwards to the parent; blob bodies trickle (128 KiB per 50 ms) so a short window ends mid-transfer."""

    async def proxy(request):
        is_blob = "/blobs/sha256:" in request.path and request.method == "GET"
        if is_blob:
            blob_ranges.append(request.headers.get("Range"))
        return await forward(request, f"{upstream['url']}{request.path_qs}", chunk_delay=0.05 if is_blob else 0.0)

    return await serve_on_free_port(proxy)


async def test_a_transfer_cut_by_the_window_end_resumes_with_range_in_the_next_window(tmp_path: Path, monkeypatch):
    upstream: dict = {}
    blob_ranges: list = []
    runner, port = await start_slow_link(upstream, blob_ranges)
    clock = FakeClock()
    set_clock(clock, NINE - timedelta(minutes=5))  # outside 09:00 + PT1H
    root, document = await start_root_for_leaf(
        tmp_path, clock, monkeypatch,
        parent={"endpoint": f"http://127.0.0.1:{port}", "syncProperties": {"schedule": "0 9 * * *", "syncWindow": "PT1H"}})
    upstream["url"] = f"http://127.0.0.1:{root.port}"
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    big = os.urandom(BLOB_BYTES)
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    try:
        async with aiohttp.ClientSession() as session:
            manifest_digest = await push_small_image(session, root, "factory/app", "v1", writer, layer=big)

            # the window opens with one second left: the 8 MiB blob needs about three on the slow link
            set_clock(clock, NINE + timedelta(hours=1) - timedelta(seconds=1))
            leaf.engine.state.wake.set()

            async def cut():
                return leaf.engine.state.in_window is False and blob_ranges

            await eventually(cut, timeout=20, what="the window to end during the transfer")
            assert await digest_at(session, leaf, "factory/app", "v1", reader) is None

            async def timed_out():  # the initial sync, cut by the window's end, is reported so
                return leaf.views.document()["registrySyncResult"]["syncState"] == "TimedOut"

            await eventually(timed_out, timeout=10, what="the initial sync TimedOut")
            assert leaf.views.document()["registrySyncResult"]["syncTrigger"] == "InitialSync"

            set_clock(clock, NINE + timedelta(days=1, seconds=1))  # the next window
            leaf.engine.state.wake.set()

            async def arrived():
                return await digest_at(session, leaf, "factory/app", "v1", reader) == manifest_digest

            await eventually(arrived, timeout=60, what="the image in the next window")

            async def recovered():  # the registry sync, taken up again by the engine itself
                result = leaf.views.document()["registrySyncResult"]
                return (result["syncTrigger"], result["syncState"]) == ("RecoveryService", "Succeeded")

            await eventually(recovered, timeout=10, what="the registry sync recovered")
        big_requests = [value for value in blob_ranges if value]
        assert big_requests, f"the next window started over instead of resuming: {blob_ranges}"
        resumed_from = int(big_requests[-1].removeprefix("bytes=").rstrip("-"))
        assert 0 < resumed_from < BLOB_BYTES
    finally:
        await leaf.stop()
        await root.stop()
        await runner.cleanup()
