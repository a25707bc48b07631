"""Blob GETs that the parent redirects (as Azure's data endpoints do) are followed without Authorization."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.sync.hierarchy import BOTH_TOP_TIERS, READER, WRITER
from tests.sync.inprocess import (FakeClock, basic_header, digest_at, eventually, forward, push_small_image,
                                  serve_on_free_port,
                                  start_root_for_leaf, start_runtime)

pytestmark = BOTH_TOP_TIERS  # the parent's side on the embedded stores and as a scale-out replica


async def start_redirecting_proxy(upstream: dict, storage_requests: list):
    async def proxy(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/storage/"):  # the "blob storage": signed URL, no registry credentials
            storage_requests.append(dict(request.headers))
            repository, digest = request.query["repository"], request.path.removeprefix("/storage/")
            return await forward(request, f"{upstream['url']}/v2/{repository}/blobs/{digest}",
                                 headers=basic_header(*READER))
        if "/blobs/sha256:" in request.path and request.method == "GET" and request.headers.get("Authorization"):
            repository, _, digest = request.path.removeprefix("/v2/").rpartition("/blobs/")
            raise web.HTTPTemporaryRedirect(f"/storage/{digest}?repository={repository}&sig=expires-soon")
        return await forward(request, f"{upstream['url']}{request.path_qs}")

    return await serve_on_free_port(proxy)


async def test_blob_redirects_are_followed_without_the_registry_credentials(tmp_path: Path, monkeypatch):
    upstream: dict = {}
    storage_requests: list = []
    runner, port = await start_redirecting_proxy(upstream, storage_requests)
    clock = FakeClock()
    root, document = await start_root_for_leaf(tmp_path, clock, monkeypatch, parent={"endpoint": f"http://127.0.0.1:{port}"})
    upstream["url"] = f"http://127.0.0.1:{root.port}"
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    leaf = None
    try:
        async with aiohttp.ClientSession() as session:
            manifest_digest = await push_small_image(session, root, "factory/app", "v1", writer,
                                                     layer=os.urandom(200_000))
            leaf = await start_runtime(tmp_path / "leaf", document, clock)

            async def arrived():
                return await digest_at(session, leaf, "factory/app", "v1", reader) == manifest_digest

            await eventually(arrived, what="the image through redirected blob GETs")
        assert len(storage_requests) == 2  # config and layer, each fetched from "storage"
        assert all("Authorization" not in headers for headers in storage_requests)
    finally:
        if leaf is not None:
            await leaf.stop()
        await root.stop()
        await runner.cleanup()
