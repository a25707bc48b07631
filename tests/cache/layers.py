"""Hierarchies whose lower layers have no sync window during the test, so everything they hold arrived on
demand; and the small helpers the pull-through tests share."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

from tests.support.http import basic, request
from tests.sync.hierarchy import READER, start_instance
from tests.sync.instance_api import status_of

# A window only on 1 January: no scheduled sync runs while a test does.
NO_SYNC_DURING_THE_TEST = {"syncProperties": {"schedule": "0 0 1 1 *", "syncWindow": "PT1H"}}


def start_cold_child(base: Path, name: str, parent, *, children=(), extra: dict | None = None,
                     parent_settings: dict | None = None, env: dict | None = None):
    """A ReadOnly child of `parent` for factory/*, which never syncs during the test; `env` adds to its environment
    (e.g. a blob store: the `blob_store` fixture's `serve_env`)."""
    return start_instance(base, name, parent=parent, repositories=["factory/*"], children=children, extra=extra,
                          parent_settings={**NO_SYNC_DURING_THE_TEST, **(parent_settings or {})}, env=env)


def cache_status(instance) -> dict:
    document = status_of(instance)
    return {**document["cache"], "lastSyncTime": document["lastSyncTime"]}


def skopeo_pull(instance, reference: str, destination: Path, *extra: str, check: bool = True):
    result = subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--src-creds", f"{READER[0]}:{READER[1]}",
                             *extra, f"docker://{instance.host}/{reference}", f"oci:{destination}:pulled"],
                            capture_output=True, text=True, timeout=180)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def blob_at(instance, repository: str, digest: str):
    return request(f"{instance.url}/v2/{repository}/blobs/{digest}", headers=basic(*READER))


def blob_transfers(proxy, digest: str) -> list:
    """The blob GETs the parent answered with content, as the proxy in front of it saw them."""
    return [exchange for exchange in proxy.exchanges
            if exchange.method == "GET" and exchange.path.endswith(f"/blobs/{digest}") and exchange.status in (200, 206)]


async def pull_blob(session, instance, repository: str, digest: str, byte_range: str | None = None
                    ) -> tuple[int, str, int]:
    """(status, sha256 of the body as it streamed, bytes received); a cut transfer raises."""
    import hashlib

    hasher, received = hashlib.sha256(), 0
    headers = {**basic(*READER), **({"Range": byte_range} if byte_range else {})}
    async with session.get(f"{instance.url}/v2/{repository}/blobs/{digest}", headers=headers) as response:
        async for chunk in response.content.iter_chunked(1 << 20):
            hasher.update(chunk)
            received += len(chunk)
        return response.status, "sha256:" + hasher.hexdigest(), received


class SwitchableParentProxy:
    """An in-process proxy between a child and its parent (on the test's event loop) whose behaviour the test
    switches: "forward", "corrupt" (blob bodies come with one byte flipped, same length), "cut" (the next
    blob GET breaks off after `cut_after` bytes, then "forward") or "hang" (requests are accepted and never
    answered). Counts the blob GETs it forwarded and records their Range headers."""

    def __init__(self, parent) -> None:
        import asyncio

        self.parent, self.mode, self.blob_gets, self.ranges, self.cut_after = parent, "forward", 0, [], 0
        self.runner = None
        self._released = asyncio.Event()  # ends the hanging requests when the proxy stops

    async def start(self) -> "SwitchableParentProxy":
        from tests.sync.inprocess import serve_on_free_port

        self.runner, port = await serve_on_free_port(self._handle)
        self.host, self.url = f"127.0.0.1:{port}", f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        self._released.set()
        await self.runner.cleanup()

    async def _handle(self, request):
        import asyncio

        import aiohttp
        from aiohttp import web

        from tests.sync.inprocess import forward

        target = f"{self.parent.url}{request.path_qs}"
        if self.mode == "hang":
            await self._released.wait()  # the fault being injected: a parent that never answers
        # (an unauthenticated GET only fetches the token challenge: not counted)
        is_blob_get = request.method == "GET" and "/blobs/sha256:" in request.path and "Authorization" in request.headers
        self.blob_gets += is_blob_get
        if is_blob_get:
            self.ranges.append(request.headers.get("Range"))
        if is_blob_get and self.mode == "cut":
            self.mode = "forward"
            return await forward(request, target, cut_after=self.cut_after)
        if not (is_blob_get and self.mode == "corrupt"):
            return await forward(request, target)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            async with session.get(target, headers={**headers, "Host": request.host}) as answer:
                body = bytearray(await answer.read())
                if answer.status != 200:
                    return web.Response(status=answer.status, body=bytes(body), headers=answer.headers)
        body[len(body) // 2] ^= 0xFF
        return web.Response(body=bytes(body), headers={"Content-Type": "application/octet-stream",
                                                        "Docker-Content-Digest": request.path.rsplit("/", 1)[1]})


@contextlib.asynccontextmanager
async def cold_leaf_behind_proxy(base: Path, parent_settings: dict | None = None, leaf_env: dict | None = None):
    """A root, a SwitchableParentProxy in front of it, and a cold leaf whose parent is the proxy:
    (root, proxy, leaf), all stopped afterwards. `leaf_env` adds to the leaf's environment."""
    root = start_instance(base, "factory-root", children=[("line1-leaf", "ReadOnly")])
    proxy = leaf = None
    try:
        proxy = await SwitchableParentProxy(root).start()
        leaf = start_cold_child(base, "line1-leaf", proxy, parent_settings=parent_settings, env=leaf_env)
        yield root, proxy, leaf
    finally:
        if leaf is not None:
            leaf.stop()
        if proxy is not None:
            await proxy.stop()
        root.stop()
