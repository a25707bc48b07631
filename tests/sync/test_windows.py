"""Sync windows (SPEC 7.4) with an injected clock: only inside the window, at once when booted mid-window,
syncNow outside any window, and a schedule change applied without a restart."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiohttp

from tests.sync.hierarchy import BOTH_TOP_TIERS, READER, WRITER
from tests.sync.inprocess import (FakeClock, basic_header, digest_at, eventually, push_small_image, set_clock,
                                  start_root_for_leaf, start_runtime)

pytestmark = BOTH_TOP_TIERS  # the parent's side on the embedded stores and as a scale-out replica

NINE = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


async def _hierarchy(tmp_path: Path, clock: FakeClock, monkeypatch, schedule: dict):
    return await start_root_for_leaf(tmp_path, clock, monkeypatch, parent={"syncProperties": schedule})


async def test_sync_happens_only_inside_the_window(tmp_path: Path, monkeypatch):
    clock = FakeClock()
    set_clock(clock, NINE - timedelta(hours=1))
    root, document = await _hierarchy(tmp_path, clock, monkeypatch, {"schedule": "0 9 * * *", "syncWindow": "PT1H"})
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    try:
        async with aiohttp.ClientSession() as session:
            digest = await push_small_image(session, root, "factory/app", "v1", writer)

            async def outside():
                return (lambda s: s if s["sync"]["nextWindowStart"] else None)(leaf.status_document())

            status = await eventually(outside, what="the leaf to compute its window")
            assert status["connectionState"] == "Offline"
            assert status["sync"]["nextWindowStart"] == "2026-12-01T09:00:00Z"
            assert status["sync"]["nextWindowEnd"] == "2026-12-01T10:00:00Z"
            # one activation call at start, so a new deployment shows Active (or ALREADY_ACTIVE) at once; no content
            await eventually(lambda: _true(leaf.engine.state.activation == "Active"), what="activation at start")
            assert await digest_at(session, leaf, "factory/app", "v1", reader) is None

            set_clock(clock, NINE + timedelta(seconds=30))
            leaf.engine.state.wake.set()  # the pause until 09:00 ends (real time would get there by itself)
            await eventually(lambda: _is(session, leaf, digest, reader), what="the image inside the window")
            assert leaf.status_document()["connectionState"] in ("Online", "Syncing")
    finally:
        await leaf.stop()
        await root.stop()


async def test_a_device_booted_mid_window_syncs_at_once(tmp_path: Path, monkeypatch):
    clock = FakeClock()
    set_clock(clock, NINE + timedelta(minutes=40))
    root, document = await _hierarchy(tmp_path, clock, monkeypatch, {"schedule": "0 9 * * *", "syncWindow": "PT1H"})
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    leaf = None
    try:
        async with aiohttp.ClientSession() as session:
            digest = await push_small_image(session, root, "factory/app", "v1", writer)
            leaf = await start_runtime(tmp_path / "leaf", document, clock)
            await eventually(lambda: _is(session, leaf, digest, reader), what="the image right after boot")
    finally:
        if leaf is not None:
            await leaf.stop()
        await root.stop()


async def test_sync_now_runs_one_round_outside_any_window(tmp_path: Path, monkeypatch):
    clock = FakeClock()
    set_clock(clock, NINE - timedelta(hours=3))
    root, document = await _hierarchy(tmp_path, clock, monkeypatch, {"schedule": "0 9 * * *", "syncWindow": "PT1H"})
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    try:
        async with aiohttp.ClientSession() as session:
            digest = await push_small_image(session, root, "factory/app", "v1", writer)
            leaf.sync_now()
            await eventually(lambda: _is(session, leaf, digest, reader), what="the image after syncNow")
            assert leaf.engine.state.in_window is False
    finally:
        await leaf.stop()
        await root.stop()


async def test_a_new_schedule_applies_without_a_restart(tmp_path: Path, monkeypatch):
    clock = FakeClock()
    set_clock(clock, NINE - timedelta(hours=3))  # 06:00: outside 09:00+PT1H
    root, document = await _hierarchy(tmp_path, clock, monkeypatch, {"schedule": "0 9 * * *", "syncWindow": "PT1H"})
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    try:
        async with aiohttp.ClientSession() as session:
            digest = await push_small_image(session, root, "factory/app", "v1", writer)

            async def first_window():
                return leaf.status_document()["sync"]["nextWindowStart"] == "2026-12-01T09:00:00Z"

            await eventually(first_window, what="the first schedule's window")
            import json

            document["parent"]["syncProperties"] = {"schedule": "0 5 * * *", "syncWindow": "PT2H"}  # 05:00-07:00
            config = tmp_path / "leaf" / "desired.json"
            config.write_text(json.dumps(document))
            await eventually(lambda: _is(session, leaf, digest, reader), what="the image under the new schedule")
            assert leaf.status_document()["sync"]["nextWindowEnd"] == "2026-12-01T07:00:00Z"
    finally:
        await leaf.stop()
        await root.stop()


async def _is(session, runtime, digest, headers) -> bool:
    return await digest_at(session, runtime, "factory/app", "v1", headers) == digest


async def _true(value: bool) -> bool:
    return value
