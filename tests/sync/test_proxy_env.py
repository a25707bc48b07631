"""HTTP_PROXY / HTTPS_PROXY are honoured for every connection to the parent (SPEC 3)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp import web

from tests.sync.hierarchy import READER, WRITER
from tests.sync.inprocess import (FakeClock, basic_header, digest_at, eventually, push_small_image, start_root_for_leaf,
                                  start_runtime)


async def start_forward_proxy(seen: list):
    """A plain forward proxy: requests arrive in absolute form and are sent on to the Host they name."""

    async def forward(request: web.Request) -> web.StreamResponse:
        target = request.headers["Host"]  # absolute-form request: the Host names the parent
        seen.append(f"{request.method} {target}{request.path}")
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.request(request.method, f"http://{target}{request.path_qs}",
                                       data=await request.read(), allow_redirects=False,
                                       headers={k: v for k, v in request.headers.items()
                                                if k.lower() not in ("host", "proxy-connection")}) as response:
                body = await response.read()
                headers = {k: v for k, v in response.headers.items()
                           if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")}
                return web.Response(status=response.status, body=body, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


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
