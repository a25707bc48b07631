"""HTTP_PROXY / HTTPS_PROXY are honoured for every connection to the parent (SPEC 3)."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.sync.hierarchy import READER, WRITER
from tests.sync.inprocess import (FakeClock, basic_header, digest_at, eventually, forward, push_small_image,
                                  serve_on_free_port, start_root_for_leaf, start_runtime)


async def start_forward_proxy(seen: list):
    """A plain forward proxy: requests arrive in absolute form and are sent on to the Host they name."""

    async def proxy(request):
        target = request.headers["Host"]
        seen.append(f"{request.method} {target}{request.path}")
        return await forward(request, f"http://{target}{request.path_qs}")

    return await serve_on_free_port(proxy)


async def test_the_parent_is_reached_through_http_proxy(tmp_path: Path, monkeypatch):
    seen: list = []
    runner, proxy_port = await start_forward_proxy(seen)
    clock = FakeClock()
    root, document = await start_root_for_leaf(tmp_path, clock, monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    try:
        async with aiohttp.ClientSession() as session:  # the test's own client ignores the environment
            digest = await push_small_image(session, root, "factory/app", "v1", writer)

            async def arrived():
                return await digest_at(session, leaf, "factory/app", "v1", reader) == digest

            await eventually(arrived, what="the image through the proxy")
        parent = f"127.0.0.1:{root.port}"
        assert any(entry.startswith("POST " + parent + "/acr/connected/v1/registries/line1-leaf/activate")
                   for entry in seen), seen
        assert any(f"{parent}/v2/factory/app/blobs/" in entry for entry in seen), seen
    finally:
        await leaf.stop()
        await root.stop()
        await runner.cleanup()
