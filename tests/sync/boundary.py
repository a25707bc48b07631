"""The repository boundary between two layers (issue 14, finding 1): a client of one repository at a child, the
content of another repository at its parent, and a link between them that can hold a blob's transfer midway, so a
fill is in progress while the test tries to join it from the other repository."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from tests.support.http import basic, request
from tests.support.oci import OCI_MANIFEST, image_manifest, sha256
from tests.support.processes import free_port
from tests.support.threaded import ThreadedApp
from tests.sync.hierarchy import OPERATOR, WRITER, client_tokens, token

SECRET, APP = "demo/secret", "demo/app"
APP_CLIENT = ("app-client", "app-client-password")  # may read, push and delete in demo/app, nothing else
APP_ACTIONS = [f"repositories/{APP}/{action}" for action in
               ("content/read", "content/write", "content/delete", "metadata/read")]


def child_tokens(name: str, app_actions: list[str] = APP_ACTIONS) -> dict:
    """The tokens of hierarchy.start_instance for an instance `name`, and the client of demo/app."""
    return {**client_tokens(),
            OPERATOR[0]: token(OPERATOR[1], [f"gateway/{name}/config/read", f"gateway/{name}/config/write",
                                             "repositories/*/metadata/read"]),
            APP_CLIENT[0]: token(APP_CLIENT[1], app_actions)}


@dataclass
class Image:
    config: bytes
    layers: list[bytes]
    manifest: bytes

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def blobs(self) -> dict[str, bytes]:
        return {sha256(blob): blob for blob in (self.config, *self.layers)}


def push_image(instance, repository: str, tag: str, layers: list[bytes], credentials=WRITER,
               config: bytes | None = None) -> Image:
    """Blobs and a manifest pushed to `instance` with `credentials`."""
    config = config or json.dumps({"repository": repository, "tag": tag}).encode()
    for blob in (config, *layers):
        reply = request(f"{instance.url}/v2/{repository}/blobs/uploads/?digest={sha256(blob)}", "POST", blob,
                        basic(*credentials), timeout=60)
        assert reply.status == 201, reply.body
    manifest = image_manifest(config, layers)
    reply = request(f"{instance.url}/v2/{repository}/manifests/{tag}", "PUT", manifest,
                    {**basic(*credentials), "Content-Type": OCI_MANIFEST})
    assert reply.status == 201, reply.body
    return Image(config, layers, manifest)


def blob_status(instance, repository: str, digest: str, credentials, method: str = "HEAD") -> int:
    return request(f"{instance.url}/v2/{repository}/blobs/{digest}", method, headers=basic(*credentials)).status


class HoldingLink(ThreadedApp):
    """A proxy between a child and its parent, on a thread of the test process. It forwards everything (Host kept,
    so the parent's token realm and Locations lead through it), except that the body of a blob GET for a digest
    in `held` stops after `hold_after` bytes until `release()`. Counts the blob GETs with credentials per digest
    in `transfers`."""

    name = "holding link"

    def __init__(self, parent, hold_after: int = 64 << 10) -> None:
        super().__init__()
        self.upstream, self.hold_after = parent.url, hold_after
        self.held: set[str] = set()
        self.transfers: Counter = Counter()
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.serve(self.port)

    async def make_app(self):
        import asyncio

        from aiohttp import web

        self._released = asyncio.Event()
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        return app

    async def close(self) -> None:
        self._released.set()

    def release(self) -> None:
        self._loop.call_soon_threadsafe(self._released.set)

    async def _forward(self, request):
        from tests.sync.inprocess import forward

        digest = request.path.rsplit("/", 1)[-1]
        headers = {k: v for k, v in request.headers.items() if k.lower() != "proxy-connection"}
        target = f"{self.upstream}{request.path_qs}"
        if request.method == "GET" and "/blobs/" in request.path and "Authorization" in request.headers:
            self.transfers[digest] += 1
            if digest in self.held and not self._released.is_set():
                return await forward(request, target, headers=headers, cut_after=self.hold_after,
                                     stall=self._released, chunk_size=16 << 10)
        return await forward(request, target, headers=headers)
