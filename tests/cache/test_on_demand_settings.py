"""`onDemand` (SPEC 3, 7.4, 8): "windowOnly" keeps the link closed outside sync windows, `false` never asks
the parent, `true` asks at any time; a configuration change applies at the next request."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp

from connected_registry.settings import validate_desired
from tests.support.oci import expect_oci_error
from tests.sync.hierarchy import READER, WRITER
from tests.sync.inprocess import (FakeClock, basic_header, digest_at, eventually, push_small_image, set_clock,
                                  start_root_for_leaf, start_runtime, url)

NINE = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


async def test_window_only_and_false_keep_the_link_closed_and_true_opens_it(tmp_path: Path, monkeypatch):
    clock = FakeClock()
    set_clock(clock, NINE - timedelta(hours=1))
    root, document = await start_root_for_leaf(tmp_path, clock, monkeypatch, parent={
        "syncProperties": {"schedule": "0 9 * * *", "syncWindow": "PT1H"}})
    document["onDemand"] = "windowOnly"
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    try:
        async with aiohttp.ClientSession() as session:
            digest = await push_small_image(session, root, "factory/app", "v1", writer)
            await eventually(lambda: asyncio.sleep(0, leaf.engine.state.window), what="the leaf's next window")
            assert not leaf.engine.state.in_window

            for setting in ("windowOnly", False):
                leaf.instance.apply(validate_desired({**document, "onDemand": setting}))
                async with session.get(url(leaf, "/v2/factory/app/manifests/v1"), headers=reader) as response:
                    await expect_oci_error(response, 404, "MANIFEST_UNKNOWN")
            assert leaf.status_document()["cache"]["misses"] == 0  # the parent was not asked

            leaf.instance.apply(validate_desired({**document, "onDemand": True}))
            assert await digest_at(session, leaf, "factory/app", "v1", reader) == digest  # still outside the window
            assert leaf.status_document()["cache"]["misses"] == 1
    finally:
        await leaf.stop()
        await root.stop()
