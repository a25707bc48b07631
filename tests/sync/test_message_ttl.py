"""A child away longer than its messageTtl gets 410, reconciles and converges (SPEC 7.4), clock injected."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.sync.hierarchy import BOTH_TOP_TIERS, READER, WRITER
from tests.sync.inprocess import (FakeClock, basic_header, digest_at, eventually, push_small_image, start_root_for_leaf,
                                  start_runtime)

pytestmark = BOTH_TOP_TIERS  # the parent's side on the embedded stores and as a scale-out replica


async def test_a_child_away_longer_than_its_message_ttl_reconciles_and_converges(tmp_path: Path, monkeypatch):
    clock = FakeClock()
    root, leaf_document = await start_root_for_leaf(tmp_path, clock, monkeypatch,
                                                    parent={"syncProperties": {"messageTtl": "P1D"}})
    leaf = await start_runtime(tmp_path / "leaf", leaf_document, clock)
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    try:
        async with aiohttp.ClientSession() as session:
            first = await push_small_image(session, root, "factory/app", "a", writer)
            await eventually(lambda: _has(session, leaf, "a", first, reader), what="tag a at the leaf")
            # stopped before its first reconcile saved the cursor, the leaf would start over without asking the feed
            await eventually(lambda: _async(leaf.engine.state.cursor is not None), what="the first cursor saved")
            await leaf.stop()

            second = await push_small_image(session, root, "factory/app", "b", writer)
            assert await root.retention.prune_events() == 0  # within the child's messageTtl nothing goes
            clock.advance(2 * 24 * 3600)
            assert await root.retention.prune_events() > 0

            leaf = await start_runtime(tmp_path / "leaf", leaf_document, clock)
            await eventually(lambda: _has(session, leaf, "b", second, reader), what="tag b after the reconcile")
            details = {d["code"]: d for d in leaf.status_document()["statusDetails"]}
            assert details["CURSOR_EXPIRED"]["severity"] == "Information"
            # the cursor is saved once the reconcile has run to the end, a moment after tag b is visible
            head = root.store.control.event_bounds()[0]
            await eventually(lambda: _async((leaf.engine.state.cursor or 0) >= head), what="the cursor saved")
    finally:
        await leaf.stop()
        await root.stop()


async def _has(session, runtime, tag, digest, headers) -> bool:
    return await digest_at(session, runtime, "factory/app", tag, headers) == digest


async def _async(value):
    return value
