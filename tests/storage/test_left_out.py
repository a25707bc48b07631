"""An index synced for some platforms only (issue 16): the children the `platforms` setting left out are absent by
design. The store takes the index without them, never calls it incomplete for them, and garbage collection neither
collects nor breaks what is there."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from connected_registry.oci.errors import OciError
from connected_registry.storage import RegistryStore
from connected_registry.storage.gc import GRACE_SECONDS, collect_garbage
from tests.storage.test_store import put_blob, put_image
from tests.support.oci import OCI_MANIFEST, image_manifest, index_manifest, sha256
from tests.support.postgres import both_metadata_backends

pytestmark = both_metadata_backends


async def three_platforms(store: RegistryStore) -> tuple[bytes, bytes, bytes, bytes]:
    """amd64, arm64 and arm bodies (only arm64 stored, with its blobs), and the index over the three."""
    amd64, arm = image_manifest(os.urandom(32), [os.urandom(100)]), image_manifest(os.urandom(32), [os.urandom(100)])
    arm64, _ = await put_image(store, "app", None)
    return amd64, arm64, arm, index_manifest([amd64, arm64, arm])


async def test_the_sync_stores_an_index_without_the_children_it_left_out_and_it_is_complete(tmp_path: Path):
    async with RegistryStore(str(tmp_path)) as store:
        amd64, arm64, arm, index = await three_platforms(store)
        left_out = frozenset({sha256(amd64), sha256(arm)})
        with pytest.raises(OciError) as refused:  # without the sync's word, the missing children are missing
            await store.put_manifest("app", "1.0", index, None, from_parent=True)
        assert refused.value.code == "MANIFEST_BLOB_UNKNOWN"

        await store.put_manifest("app", "1.0", index, None, from_parent=True, left_out=left_out)
        assert store.get_manifest("app", "1.0").body == index  # byte for byte, under its own digest
        assert not store.incomplete("app", sha256(index))
        assert store.left_out_children("app", sha256(index)) == left_out
        assert store.left_out_by("app", sha256(amd64)) == sha256(index)
        assert store.left_out_by("app", sha256(arm64)) is None


async def test_a_new_tag_for_the_index_as_it_is_here_is_taken_and_keeps_what_is_absent_by_design(tmp_path: Path):
    async with RegistryStore(str(tmp_path), record_outbox=True) as store:
        amd64, _, arm, index = await three_platforms(store)
        await store.put_manifest("app", "1.0", index, None, from_parent=True,
                                 left_out=frozenset({sha256(amd64), sha256(arm)}))
        await store.put_manifest("app", "stable", index, None)  # a client's push, as crane tag does it
        assert store.get_manifest("app", "stable").digest == sha256(index)
        assert store.left_out_children("app", sha256(index)) == {sha256(amd64), sha256(arm)}
        assert [entry["tag"] for entry in store.outbox() if entry["digest"] == sha256(index)] == ["stable"]


async def test_what_is_under_a_left_out_child_is_not_missing_but_a_kept_child_is_checked(tmp_path: Path):
    async with RegistryStore(str(tmp_path)) as store:
        amd64, arm64, arm, index = await three_platforms(store)
        await store.put_manifest("app", sha256(arm), arm, OCI_MANIFEST, on_demand=True)  # its blobs are not here
        await store.put_manifest("app", "1.0", index, None, from_parent=True, left_out=frozenset({sha256(amd64)}))
        assert store.incomplete("app", sha256(index))  # arm is kept: its blobs are missing

        await store.put_manifest("app", sha256(amd64), amd64, OCI_MANIFEST, on_demand=True)  # filled for a client
        await store.put_manifest("app", "1.0", index, None, from_parent=True,
                                 left_out=frozenset({sha256(amd64), sha256(arm)}))
        assert not store.incomplete("app", sha256(index))  # amd64's and arm's blobs are absent too: by design


async def test_a_wider_setting_makes_a_left_out_child_wanted_again(tmp_path: Path):
    async with RegistryStore(str(tmp_path)) as store:
        amd64, _, arm, index = await three_platforms(store)
        await store.put_manifest("app", "1.0", index, None, from_parent=True,
                                 left_out=frozenset({sha256(amd64), sha256(arm)}))
        with pytest.raises(OciError):  # the sync now wants arm: it must copy it first
            await store.put_manifest("app", "1.0", index, None, from_parent=True, left_out=frozenset({sha256(amd64)}))
        assert store.left_out_children("app", sha256(index)) == {sha256(amd64), sha256(arm)}


async def test_read_only_gc_keeps_the_index_what_it_kept_and_a_left_out_child_filled_on_demand(tmp_path: Path):
    async with RegistryStore(str(tmp_path)) as store:
        amd64, arm64, arm, index = await three_platforms(store)
        await store.put_manifest("app", "1.0", index, None, from_parent=True,
                                 left_out=frozenset({sha256(amd64), sha256(arm)}))
        arm64_blobs = [blob["digest"] for blob in json.loads(arm64)["layers"]]
        await store.put_manifest("app", sha256(amd64), amd64, OCI_MANIFEST, on_demand=True)
        stray = await put_blob(store, "app", os.urandom(64))  # garbage indeed: nothing references it

        report = await collect_garbage(store, read_only=True, now=time.time() + GRACE_SECONDS + 60)
        assert (report.manifests_removed, report.blobs_removed) == (0, 1)
        for body in (index, arm64, amd64):
            assert store.get_manifest("app", sha256(body)) is not None
        assert all(store.blob_size("app", digest) is not None for digest in arm64_blobs)
        assert store.blob_size("app", stray) is None
        assert not store.incomplete("app", sha256(index))
