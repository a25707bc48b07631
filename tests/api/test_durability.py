"""The storage boundary itself: fsync, rename, directory fsync and commit happen in that order, before the 201."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer

from connected_registry.api import create_app
from connected_registry.api.context import ApiContext
from connected_registry.auth import AnonymousAccess
from connected_registry.storage import Disk, RegistryStore
from connected_registry.storage.disk import Transaction
from tests.support.oci import image_manifest, sha256
from tests.support.postgres import both_metadata_backends

pytestmark = both_metadata_backends  # the order holds whichever store commits the metadata


class RecordingDisk(Disk):
    """The real durability operations, each also written to a shared journal."""

    def __init__(self, journal: list[tuple]) -> None:
        self.journal = journal

    def fsync_file(self, fd: int) -> None:
        super().fsync_file(fd)
        self.journal.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

    def rename(self, source: str, target: str) -> None:
        super().rename(source, target)
        self.journal.append(("rename", source, target))

    def fsync_dir(self, path: str) -> None:
        super().fsync_dir(path)
        self.journal.append(("fsync_dir", path))

    def commit(self, connection: Transaction) -> None:
        super().commit(connection)
        self.journal.append(("commit",))


async def _serve(tmp_path: Path, journal: list[tuple]):
    store = RegistryStore(str(tmp_path / "data"), disk=RecordingDisk(journal))
    app = create_app(ApiContext(store=store, access=AnonymousAccess()))

    async def record_response(request, response):
        journal.append(("response", response.status, request.method, request.path))

    app.on_response_prepare.append(record_response)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return store, server


def _assert_durable_before_response(steps: list[tuple], blob_path: str) -> None:
    kinds = [step[0] for step in steps]
    assert kinds == ["fsync", "rename", "fsync_dir", "commit", "response"], steps
    fsync, rename, fsync_dir, _, response = steps
    assert rename[1] == fsync[1], "the file fsynced must be the one renamed into place"
    assert rename[2] == blob_path
    assert fsync_dir[1] == os.path.dirname(blob_path)
    assert response[1] == 201


async def test_blob_push_is_fsynced_renamed_dir_synced_and_committed_before_201(tmp_path: Path):
    journal: list[tuple] = []
    store, server = await _serve(tmp_path, journal)
    data = os.urandom(3 << 20)
    digest = sha256(data)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(server.make_url("/v2/durable/blobs/uploads/")) as response:
                location = response.headers["Location"]
            async with session.patch(location, data=data[: 1 << 20]) as response:
                assert response.status == 202
            journal.clear()
            async with session.put(location, params={"digest": digest}, data=data[1 << 20 :]) as response:
                assert response.status == 201
        _assert_durable_before_response(journal, store.files.path(digest))
        with open(store.files.path(digest), "rb") as file:
            assert file.read() == data
    finally:
        await server.close()
        store.close()


async def test_monolithic_push_and_manifest_push_are_durable_before_201(tmp_path: Path):
    journal: list[tuple] = []
    store, server = await _serve(tmp_path, journal)
    config, layer = b'{"os":"linux"}', os.urandom(1 << 16)
    try:
        async with aiohttp.ClientSession() as session:
            for blob in (config, layer):
                journal.clear()
                async with session.post(server.make_url("/v2/durable/blobs/uploads/"),
                                        params={"digest": sha256(blob)}, data=blob) as response:
                    assert response.status == 201
                _assert_durable_before_response(journal, store.files.path(sha256(blob)))
            manifest = image_manifest(config, [layer])
            journal.clear()
            async with session.put(server.make_url("/v2/durable/manifests/v1"), data=manifest,
                                   headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}) as response:
                assert response.status == 201
            _assert_durable_before_response(journal, store.files.path(sha256(manifest)))
    finally:
        await server.close()
        store.close()
