"""An interrupted blob transfer resumes with a Range request where it stopped (SPEC 7.2)."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp

from tests.support.oci import sha256
from tests.sync.hierarchy import BOTH_TOP_TIERS, READER, WRITER
from tests.sync.inprocess import (FakeClock, basic_header, digest_at, eventually, forward, push_small_image,
                                  serve_on_free_port,
                                  start_root_for_leaf, start_runtime, url)

pytestmark = BOTH_TOP_TIERS  # the parent's side on the embedded stores and as a scale-out replica

CUT_AFTER = 3 << 20


async def start_cutting_proxy(upstream: dict, seen: list):
    """Forwards everything; the first blob GET is cut after CUT_AFTER bytes. Records each blob GET's Range."""
    state = {"cut": False}

    async def proxy(request):
        is_blob = "/blobs/sha256:" in request.path and request.method == "GET"
        if is_blob:
            seen.append(request.headers.get("Range"))
        reply = await forward(request, f"{upstream['url']}{request.path_qs}",
                              cut_after=CUT_AFTER if is_blob and not state["cut"] else None)
        if is_blob and (request.transport is None or request.transport.is_closing()):
            state["cut"] = True  # only the first blob long enough to be cut is cut
        return reply

    return await serve_on_free_port(proxy)


async def test_a_cut_blob_transfer_resumes_with_range(tmp_path: Path, monkeypatch, top_tier: str):
    upstream: dict = {}
    seen: list = []
    runner, proxy_port = await start_cutting_proxy(upstream, seen)
    clock = FakeClock()
    root, document = await start_root_for_leaf(tmp_path, clock, monkeypatch,
                                                parent={"endpoint": f"http://127.0.0.1:{proxy_port}"})
    upstream["url"] = f"http://127.0.0.1:{root.port}"
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    big = os.urandom(8 << 20)
    leaf = None
    try:
        async with aiohttp.ClientSession() as session:
            manifest_digest = await push_small_image(session, root, "factory/app", "v1", writer, layer=big)
            leaf = await start_runtime(tmp_path / "leaf", document, clock)

            async def arrived():
                return await digest_at(session, leaf, "factory/app", "v1", reader) == manifest_digest

            await eventually(arrived, timeout=60, what="the image after the cut")
            async with session.get(url(leaf, f"/v2/factory/app/blobs/{sha256(big)}"), headers=reader) as response:
                assert sha256(await response.read()) == sha256(big)
        ranges = [value for value in seen if value]
        assert ranges, f"no Range request after the cut: {seen}"
        resumed_from = int(ranges[0].removeprefix("bytes=").rstrip("-"))
        assert 0 < resumed_from <= CUT_AFTER
        clustered = top_tier == "clustered"  # then the Range was read from Azure, the root's metadata in PostgreSQL
        assert (root.store.blob_store.startswith("azure://"), root.store.metadata.shared) == (clustered, clustered)
    finally:
        if leaf is not None:
            await leaf.stop()
        await root.stop()
        await runner.cleanup()
