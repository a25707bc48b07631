"""Instances run inside the test's event loop, with an injected clock (for TTLs and windows)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from connected_registry.runtime import InstanceOptions, Runtime
from tests.support.azurite import BLOB_STORE_VARIABLE
from tests.support.oci import image_manifest, sha256
from tests.support.postgres import METADATA_DSN_VARIABLE
from tests.sync.hierarchy import tier_environment


class FakeClock:
    """Real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


async def eventually(condition: Callable[[], Awaitable[object]], timeout: float = 30, what: str = "condition"):
    """Poll an async condition with a deadline (the loop keeps running the instances meanwhile)."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = await condition()
            if result:
                return result
        except Exception as error:  # noqa: BLE001 - keep polling
            last_error = error
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}" + (f": {last_error!r}" if last_error else ""))


def reported_properties(directory: Path) -> dict:
    """What an operator reads of an instance started by `start_runtime(directory, ...)`: its reported properties as
    it last wrote them (beside its --config file, the document the module twin gets); {} before the first."""
    try:
        return json.loads((directory / "reported.json").read_text())
    except (OSError, ValueError):
        return {}


async def start_runtime(directory: Path, document: dict, clock: FakeClock, blob_store: str | None = None) -> Runtime:
    """`blob_store`: as `serve --blob-store` (None: the filesystem store, or a root's clustered stores, `top_tier`)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "desired.json"
    config.write_text(json.dumps(document))
    stores = tier_environment(document.get("parent"), None)  # a root on its own stores in a clustered case
    runtime = Runtime(InstanceOptions(str(directory / "data"), "127.0.0.1", 0, str(config),
                                      metadata=stores.get(METADATA_DSN_VARIABLE),
                                      blob_store=blob_store or stores.get(BLOB_STORE_VARIABLE)), clock=clock)
    await runtime.start()
    return runtime


def url(runtime: Runtime, path: str) -> str:
    return f"http://127.0.0.1:{runtime.port}{path}"


def basic_header(name: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


async def push_small_image(session: aiohttp.ClientSession, runtime: Runtime, repository: str, tag: str,
                           headers: dict, layer: bytes | None = None) -> str:
    """A config, one layer (small unless given) and a manifest pushed to `runtime`; returns the manifest digest."""
    config, layer = json.dumps({"tag": tag, "t": time.time()}).encode(), layer or tag.encode() * 100
    for blob in (config, layer):
        async with session.post(url(runtime, f"/v2/{repository}/blobs/uploads/"), params={"digest": sha256(blob)},
                                data=blob, headers=headers) as response:
            assert response.status == 201, await response.text()
    body = image_manifest(config, [layer])
    async with session.put(url(runtime, f"/v2/{repository}/manifests/{tag}"), data=body,
                           headers={**headers, "Content-Type": "application/vnd.oci.image.manifest.v1+json"}) as response:
        assert response.status == 201, await response.text()
    return sha256(body)


async def digest_at(session: aiohttp.ClientSession, runtime: Runtime, repository: str, reference: str,
                    headers: dict) -> str | None:
    async with session.get(url(runtime, f"/v2/{repository}/manifests/{reference}"), headers=headers) as response:
        return response.headers.get("Docker-Content-Digest") if response.status == 200 else None


def set_clock(clock: FakeClock, moment) -> None:
    """Move the fake clock to a datetime (keeps running in real time from there)."""
    clock.offset = moment.timestamp() - time.time()


async def start_root_for_leaf(base: Path, clock: FakeClock, monkeypatch, *, repositories: list[str] | None = None,
                              parent: dict | None = None, mode: str = "ReadOnly") -> tuple[Runtime, dict]:
    """A root with the client tokens and line1-leaf's sync token, running; and the leaf's desired document
    (not started), its connection string set in the environment, with on-demand fills off. `parent` adds to the
    leaf's parent settings."""
    from tests.sync.hierarchy import client_tokens, sync_token_for

    sync_name, sync_password, sync_entry = sync_token_for("line1-leaf", mode)
    root = await start_runtime(base / "root", {"name": "factory-root",
                                              "tokens": {**client_tokens(), sync_name: sync_entry}}, clock)
    monkeypatch.setenv("ACR_REGISTRY_CONNECTION_STRING", f"SyncTokenName={sync_name};SyncTokenPassword={sync_password}")
    # onDemand false: these tests watch the sync, so a GET at the leaf must not fill the content itself
    leaf = {"name": "line1-leaf", "mode": mode, "tokens": client_tokens(), "repositories": repositories or ["factory/*"],
            "onDemand": False,
            "parent": {"endpoint": f"http://127.0.0.1:{root.port}", "syncToken": {"name": sync_name}, **(parent or {})}}
    return root, leaf


async def serve_on_free_port(handler, port: int = 0) -> tuple:
    """An aiohttp app answering every path with `handler`, on a free loopback port (or `port`): (runner, port)."""
    from aiohttp import web

    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


_HOP_HEADERS = ("content-length", "transfer-encoding", "content-encoding")


async def forward(request, target: str, *, headers: dict | None = None, chunk_delay: float = 0.0,
                  cut_after: int | None = None, reset: bool = False, stall: asyncio.Event | None = None,
                  chunk_size: int = 1 << 17, lose_answer: bool = False):
    """Send `request` on to the URL `target` and stream the answer back: the test proxies' one forwarding path.
    `chunk_delay` paces the body (a slow link); `cut_after` drops the connection after that many body bytes
    (with a TCP reset when `reset`), or, given `stall`, stops sending there until `stall` is set; `lose_answer`
    lets the target do the work and then closes the connection without an answer."""
    from aiohttp import web

    sent_headers = headers if headers is not None else {k: v for k, v in request.headers.items()
                                                         if k.lower() not in ("host", "proxy-connection")}
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.request(request.method, target, data=await request.read(), headers=sent_headers,
                                   allow_redirects=False) as response:
            if lose_answer:
                await response.read()
                break_connection(request, reset=False)
                return web.Response()
            reply = web.StreamResponse(status=response.status, headers={
                k: v for k, v in response.headers.items() if k.lower() not in _HOP_HEADERS})
            if response.content_length is not None:
                reply.content_length = response.content_length
            await reply.prepare(request)
            sent = 0
            async for chunk in response.content.iter_chunked(chunk_size):
                if cut_after is not None and sent + len(chunk) > cut_after:
                    await reply.write(chunk[: cut_after - sent])
                    if stall is not None:  # the link goes silent mid-transfer, then comes back
                        await stall.wait()
                        cut_after = None
                    else:
                        break_connection(request, reset)  # the link drops mid-transfer
                        return reply
                await reply.write(chunk)
                sent += len(chunk)
                if chunk_delay:
                    await asyncio.sleep(chunk_delay)  # the slow link itself: the fault being injected
            await reply.write_eof()
            return reply


def break_connection(request, reset: bool) -> None:
    """Close the client's connection: a FIN, or with `reset` a TCP RST (SO_LINGER 0), as a link that fails does."""
    if request.transport is None:
        return
    if reset:
        sock = request.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        request.transport.abort()
    else:
        request.transport.close()


async def forward_cut_body(request, target: str, headers: dict, cut_after: int) -> int:
    """Send the first `cut_after` bytes of the request's body on to `target`, then drop both connections, as a
    link that fails in the middle of an upload does. Returns the bytes sent on."""
    sent = 0

    async def body():
        nonlocal sent
        while sent < cut_after:
            chunk = await request.content.read(min(1 << 16, cut_after - sent))
            if not chunk:
                return
            yield chunk
            sent += len(chunk)
        raise ConnectionResetError("the link drops mid-upload")

    try:
        async with aiohttp.ClientSession() as session:
            async with session.request(request.method, target, data=body(), headers=headers) as response:
                await response.read()
    except (aiohttp.ClientError, OSError):
        pass
    break_connection(request, reset=True)
    return sent


LINK_FAULTS = ("drop", "stall", "reset", "trickle", "refuse")


class FaultyLink:
    """The test proxy between two layers, with one fault switched on at a time (`fault`, None for a good link):
    drop (manifest PUTs forwarded, then the connection closed: the parent applied it, the answer is lost),
    stall (blob bodies stop after `cut_after` bytes until the fault ends), reset (blob bodies cut with a TCP RST
    after `cut_after` bytes, uploads reset before they are forwarded), trickle (bodies paced in small slow
    chunks), refuse (nothing listens on the port), cut_upload (blob upload bodies longer than `cut_after`
    forwarded up to there, then both connections dropped) and latency (every request held `latency` seconds
    before it is forwarded, as a long link's round trip). Counts what it did in `injected`, the blob upload
    bytes it carried to the parent in `upload_bytes` and the blob downloads in `blob_transfers`."""

    def __init__(self, cut_after: int = 256 << 10, latency: float = 0.2) -> None:
        self.upstream = ""
        self.cut_after = cut_after
        self.latency = latency
        self.fault: str | None = None
        self.port = 0
        self.injected: dict[str, int] = {}
        self.upload_bytes = 0
        self.blob_transfers = 0  # blob GETs with credentials: transfers (an unauthenticated one is a 401 challenge)
        self._runner = None
        self._fault_over = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "FaultyLink":
        self._runner, self.port = await serve_on_free_port(self._handle, self.port)
        return self

    async def close(self) -> None:
        self._fault_over.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def set(self, fault: str | None) -> None:
        if self.fault == "refuse" and fault != "refuse":
            await self.start()
        self.fault = fault
        if fault is None:
            self._fault_over.set()
        else:
            self._fault_over = asyncio.Event()
        if fault == "refuse":
            await self._runner.cleanup()  # closes the listener and every open connection
            self._runner = None
            self._count("refuse")

    def _count(self, fault: str) -> None:
        self.injected[fault] = self.injected.get(fault, 0) + 1

    async def _handle(self, request):
        from aiohttp import web

        fault, target = self.fault, f"{self.upstream}{request.path_qs}"
        # Host is kept, as the IoT Edge API proxy keeps it: the parent's upload Locations then lead through the link
        headers = {k: v for k, v in request.headers.items() if k.lower() != "proxy-connection"}
        is_blob_body = "/blobs/sha256:" in request.path and request.method == "GET"
        if is_blob_body and "Authorization" in request.headers:
            self.blob_transfers += 1
        if fault == "latency":
            self._count("latency")
            await asyncio.sleep(self.latency)  # the long link's round trip: the fault being injected
        if request.method in ("PUT", "PATCH") and "/blobs/uploads/" in request.path:
            if fault == "cut_upload" and (request.content_length or 0) > self.cut_after:
                self._count("cut_upload")
                self.upload_bytes += await forward_cut_body(request, target, headers, self.cut_after)
                return web.Response()
            if fault != "reset":  # a reset upload is not carried on
                self.upload_bytes += len(await request.read())
        if fault == "drop" and request.method == "PUT" and "/manifests/" in request.path:
            self._count("drop")
            # the parent did the work; the answer is lost
            return await forward(request, target, headers=headers, lose_answer=True)
        if fault == "reset" and request.method in ("PUT", "PATCH", "POST") and request.can_read_body:
            await request.read()
            self._count("reset")
            break_connection(request, reset=True)
            return web.Response()
        if fault in ("stall", "reset") and is_blob_body:
            self._count(fault)
            return await forward(request, target, headers=headers, cut_after=self.cut_after, reset=True,
                                 stall=self._fault_over if fault == "stall" else None)
        if fault == "trickle" and is_blob_body:
            self._count("trickle")
            return await forward(request, target, headers=headers, chunk_delay=0.01, chunk_size=16 << 10)
        return await forward(request, target, headers=headers)
