"""The read routes serve whatever `Content` the instance wires in (storage.content): the local store on a root, the
pull-through layer on a child. Here a recording layer wraps the local content, as the pull-through does, so the
seam is tested without a parent: which call each request makes, and a blob still arriving served as it lands."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

from connected_registry.api.context import CONTEXT
from connected_registry.storage import RegistryStore
from connected_registry.storage.content import Content, LocalContent
from tests.support.oci import expect_oci_error, image_manifest, push_blob, push_manifest, serve_store, sha256

REPOSITORY = "demo/app"


class Arriving:
    """A blob still arriving, whole on disk already: `windows` yields it in two pieces."""

    def __init__(self, path: str, size: int) -> None:
        self.file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close(), as a fill's reader is
        self.size = size
        self.failure: str | None = None
        self.closed = False

    async def windows(self, start: int, end: int) -> AsyncIterator[tuple[int, int]]:
        middle = (start + end) // 2
        yield start, middle - start
        yield middle, end - middle

    def close(self) -> None:
        self.closed = True
        self.file.close()


class Recording:
    """A layer around `local` that records each call and, for `arriving`, answers a GET with a blob still arriving."""

    def __init__(self, local: Content, arriving: dict[str, Arriving] | None = None) -> None:
        self.local, self.arriving, self.calls = local, arriving or {}, []

    async def get_manifest(self, repository, reference):
        self.calls.append(("get_manifest", reference))
        return await self.local.get_manifest(repository, reference)

    def stat_blob(self, repository, digest):
        self.calls.append(("stat_blob", digest))
        return self.local.stat_blob(repository, digest)

    async def open_blob(self, repository, digest):
        self.calls.append(("open_blob", digest))
        return self.arriving.get(digest) or await self.local.open_blob(repository, digest)

    async def referrers(self, repository, subject, artifact_type):
        self.calls.append(("referrers", subject))
        return [*await self.local.referrers(repository, subject, artifact_type),
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "f" * 64,
                 "size": 1, "artifactType": "application/example"}]

    def repository_exists(self, repository):
        self.calls.append(("repository_exists", repository))
        return self.local.repository_exists(repository)

    def list_tags(self, repository, limit, last):
        self.calls.append(("list_tags", repository))
        return self.local.list_tags(repository, limit, last)

    def list_repositories(self, limit, last):
        self.calls.append(("list_repositories", last))
        return self.local.list_repositories(limit, last)


async def _until(condition, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not within the deadline"
        await asyncio.sleep(0.01)


async def test_a_blob_head_only_looks_and_a_get_opens_through_the_content_layer(tmp_path: Path):
    """A HEAD must never open a blob: on a child, opening one that is missing starts a transfer from the parent."""
    store = RegistryStore(str(tmp_path / "data"))
    try:
        async with serve_store(store) as api:
            digest = await push_blob(api, REPOSITORY, b"layer bytes")
            layer = api.server.app[CONTEXT].content = Recording(LocalContent(store))
            async with api.request("HEAD", f"/v2/{REPOSITORY}/blobs/{digest}") as response:
                assert response.status == 200 and response.headers["Content-Length"] == "11"
            async with api.request("HEAD", f"/v2/{REPOSITORY}/blobs/{sha256(b'missing')}") as response:
                assert response.status == 404
            async with api.request("GET", f"/v2/{REPOSITORY}/blobs/{digest}") as response:
                assert await response.read() == b"layer bytes"
            assert layer.calls == [("stat_blob", digest), ("stat_blob", sha256(b"missing")), ("open_blob", digest)]
    finally:
        store.close()


async def test_a_blob_still_arriving_is_served_whole_or_as_one_range_as_it_lands(tmp_path: Path):
    data = os.urandom(100_000)
    digest = sha256(data)
    (tmp_path / "partial").write_bytes(data)
    store = RegistryStore(str(tmp_path / "data"))
    try:
        async with serve_store(store) as api:
            whole, part = Arriving(str(tmp_path / "partial"), len(data)), Arriving(str(tmp_path / "partial"), len(data))
            api.server.app[CONTEXT].content = Recording(LocalContent(store), {digest: whole})
            async with api.request("GET", f"/v2/{REPOSITORY}/blobs/{digest}") as response:
                assert response.status == 200 and response.headers["Docker-Content-Digest"] == digest
                assert await response.read() == data
            api.server.app[CONTEXT].content = Recording(LocalContent(store), {digest: part})
            ranged = {"Range": "bytes=10-19"}
            async with api.request("GET", f"/v2/{REPOSITORY}/blobs/{digest}", headers=ranged) as response:
                assert response.status == 206 and response.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
                assert await response.read() == data[10:20]
            await _until(lambda: whole.closed and part.closed)  # the transfer is let go of once the answer is sent
            async with api.request("HEAD", f"/v2/{REPOSITORY}/blobs/{digest}") as response:
                assert response.status == 404  # arriving is not here yet: a HEAD says so
    finally:
        store.close()


async def test_manifests_referrers_and_tags_are_read_through_the_content_layer(tmp_path: Path):
    store = RegistryStore(str(tmp_path / "data"))
    try:
        async with serve_store(store) as api:
            config, layer_data = b"{}", b"layer"
            for blob in (config, layer_data):
                await push_blob(api, REPOSITORY, blob)
            manifest = image_manifest(config, [layer_data])
            await push_manifest(api, REPOSITORY, "v1", manifest)
            layer = api.server.app[CONTEXT].content = Recording(LocalContent(store))
            async with api.request("GET", f"/v2/{REPOSITORY}/manifests/v1") as response:
                assert await response.read() == manifest
            async with api.request("GET", f"/v2/{REPOSITORY}/referrers/{sha256(manifest)}") as response:
                assert [m["digest"] for m in (await response.json())["manifests"]] == ["sha256:" + "f" * 64]
            async with api.request("GET", f"/v2/{REPOSITORY}/tags/list") as response:
                assert (await response.json())["tags"] == ["v1"]
            async with api.request("GET", "/v2/_catalog") as response:
                assert (await response.json())["repositories"] == [REPOSITORY]
            await expect_oci_error(await api.request("GET", f"/v2/{REPOSITORY}/manifests/v2"), 404, "MANIFEST_UNKNOWN")
            assert [call[0] for call in layer.calls] == ["get_manifest", "referrers", "repository_exists", "list_tags",
                                                         "list_repositories", "get_manifest"]
    finally:
        store.close()
