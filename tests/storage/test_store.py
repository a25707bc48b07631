"""Storage on its own: schema versions, upload sessions across restarts, garbage collection."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from connected_registry.oci.errors import OciError
from connected_registry.storage import RegistryStore, StorageError
from connected_registry.storage.gc import GRACE_SECONDS, collect_garbage
from connected_registry.storage.sqlite.schema import SCHEMA_VERSION
from tests.support.oci import image_manifest, index_manifest, sha256
from tests.support.postgres import both_metadata_backends


class BytesStream:
    def __init__(self, data: bytes, piece: int = 65536) -> None:
        self.pieces = [data[i : i + piece] for i in range(0, len(data), piece)]

    async def readany(self) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""


async def put_blob(store: RegistryStore, repository: str, data: bytes, piece: int = 65536) -> str:
    session = await store.uploads.create(repository)
    await store.uploads.append(session, BytesStream(data, piece), 0)
    await store.uploads.complete(session, BytesStream(b""), sha256(data), "test")
    return sha256(data)


async def put_image(store: RegistryStore, repository: str, tag: str | None, **options) -> tuple[bytes, list[str]]:
    config, layer = os.urandom(32), os.urandom(1000)
    digests = [await put_blob(store, repository, config), await put_blob(store, repository, layer)]
    body = image_manifest(config, [layer], **options)
    await store.put_manifest(repository, tag or sha256(body), body, None)
    return body, digests


def test_a_newer_schema_is_refused_with_disk_schema_newer(tmp_path: Path):
    RegistryStore(str(tmp_path)).close()
    with sqlite3.connect(tmp_path / "metadata.db") as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StorageError) as raised:
        RegistryStore(str(tmp_path))
    assert raised.value.code == "DISK_SCHEMA_NEWER"
    assert "newer" in str(raised.value)


def test_a_fresh_volume_gets_the_current_schema_version(tmp_path: Path):
    RegistryStore(str(tmp_path)).close()
    with sqlite3.connect(tmp_path / "metadata.db") as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@both_metadata_backends
async def test_an_upload_session_survives_a_restart_and_rehashes_once(tmp_path: Path):
    data = os.urandom(3 << 20)
    async with RegistryStore(str(tmp_path)) as store:
        session = await store.uploads.create("repo")
        await store.uploads.append(session, BytesStream(data[:1_000_000]), 0)

    async with RegistryStore(str(tmp_path)) as store:
        resumed = store.uploads.get("repo", session.id)
        assert resumed.offset == 1_000_000
        await store.uploads.append(resumed, BytesStream(data[1_000_000:]), 1_000_000)
        await store.uploads.complete(resumed, BytesStream(b""), sha256(data), "test")
        assert store.blob_size("repo", sha256(data)) == len(data)
        with open(store.files.path(sha256(data)), "rb") as file:
            assert file.read() == data


@both_metadata_backends
@pytest.mark.parametrize("piece", [1, 4099, 300_000])
async def test_a_body_in_pieces_of_any_size_is_stored_and_hashed_whole(tmp_path: Path, piece: int):
    """Blocks are written with writev as the pieces came: a trickle of tiny ones (more than one writev takes)
    and large ones that straddle blocks store the same bytes, and the digest is checked over them all."""
    data = os.urandom(3 << 20 if piece > 1 else 200_000)
    async with RegistryStore(str(tmp_path)) as store:
        digest = await put_blob(store, "repo", data, piece)
        with open(store.files.path(digest), "rb") as file:
            assert file.read() == data


@both_metadata_backends
async def test_gc_removes_only_unreferenced_blobs_past_the_grace_period(tmp_path: Path):
    async with RegistryStore(str(tmp_path)) as store:
        _, kept = await put_image(store, "repo", "v1")
        orphan = await put_blob(store, "repo", b"nobody references me")

        early = await collect_garbage(store, now=time.time() + GRACE_SECONDS - 60)
        assert early.blobs_removed == 0
        assert store.blob_size("repo", orphan) is not None

        late = await collect_garbage(store, now=time.time() + GRACE_SECONDS + 60)
        assert late.blobs_removed == 1 and late.bytes_freed == len(b"nobody references me")
        assert store.blob_size("repo", orphan) is None
        assert not os.path.exists(store.files.path(orphan))
        for digest in kept:
            assert store.blob_size("repo", digest) is not None and os.path.exists(store.files.path(digest))
        assert store.get_manifest("repo", "v1") is not None


@both_metadata_backends
async def test_gc_removes_abandoned_uploads_and_stray_files(tmp_path: Path):
    async with RegistryStore(str(tmp_path)) as store:
        session = await store.uploads.create("repo")
        stray = store.files.path(sha256(b"stray"))
        with open(stray, "wb") as file:
            file.write(b"stray")
        assert (await collect_garbage(store, now=time.time() + 60)).uploads_removed == 0
        report = await collect_garbage(store, now=time.time() + GRACE_SECONDS + 60)
        assert report.uploads_removed == 1 and report.stray_files_removed == 1
        assert not os.path.exists(session.path) and not os.path.exists(stray)


@both_metadata_backends
async def test_gc_removes_empty_sessions_after_an_hour_and_keeps_those_with_bytes_for_a_day(tmp_path: Path):
    async with RegistryStore(str(tmp_path)) as store:
        empty, started = await store.uploads.create("repo"), await store.uploads.create("repo")
        await store.uploads.append(started, BytesStream(b"some bytes"), 0)
        assert (await collect_garbage(store, now=time.time() + 3000)).uploads_removed == 0

        report = await collect_garbage(store, now=time.time() + 3600 + 60)
        assert report.uploads_removed == 1 and not os.path.exists(empty.path)
        with pytest.raises(OciError, match="unknown"):
            store.uploads.get("repo", empty.id)
        assert store.uploads.get("repo", started.id).offset == len(b"some bytes")
        assert (await collect_garbage(store, now=time.time() + GRACE_SECONDS + 60)).uploads_removed == 1
        assert not os.path.exists(started.path)


@both_metadata_backends
async def test_read_only_gc_keeps_tagged_content_index_children_and_referrers(tmp_path: Path):
    async with RegistryStore(str(tmp_path)) as store:
        child, _ = await put_image(store, "repo", None)
        index = index_manifest([child])
        await store.put_manifest("repo", "multi", index, None)
        tagged, _ = await put_image(store, "repo", "v1")
        signature, _ = await put_image(store, "repo", None, subject=tagged, artifact_type="application/vnd.example.sig")
        untagged, untagged_blobs = await put_image(store, "repo", None)

        report = await collect_garbage(store, read_only=True, now=time.time() + GRACE_SECONDS + 60)
        assert report.manifests_removed == 1
        for body in (child, index, tagged, signature):
            assert store.get_manifest("repo", sha256(body)) is not None
        assert store.get_manifest("repo", sha256(untagged)) is None
        assert all(store.blob_size("repo", digest) is None for digest in untagged_blobs)


@both_metadata_backends
async def test_read_write_gc_keeps_untagged_manifests(tmp_path: Path):
    async with RegistryStore(str(tmp_path)) as store:
        untagged, blobs = await put_image(store, "repo", None)
        report = await collect_garbage(store, now=time.time() + GRACE_SECONDS + 60)
        assert report.manifests_removed == 0 and report.blobs_removed == 0
        assert store.get_manifest("repo", sha256(untagged)) is not None
