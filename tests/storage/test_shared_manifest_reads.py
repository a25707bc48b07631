"""A replica on shared metadata keeps no cache of what a tag or a repository names (another replica may change it),
but a manifest's body by digest never changes: it reads it from object storage once, and after that a manifest GET
costs one database round trip (benchmarks/cluster.py: this was half of a replica's manifest GET time)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connected_registry.storage import RegistryStore
from tests.support.oci import push_image, serve_store


@pytest.mark.parametrize("metadata_backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("blob_store", ["azure"], indirect=True)
async def test_a_replica_reads_a_manifest_body_from_object_storage_once_and_still_sees_other_replicas_writes(
        tmp_path: Path, blob_store, metadata_backend):
    async with RegistryStore(str(tmp_path / "one"), blob_store=blob_store.spec) as store, \
            RegistryStore(str(tmp_path / "other"), blob_store=blob_store.spec) as other:
        async with serve_store(store) as api, serve_store(other) as other_api:
            body, digest = await push_image(api, "app", "v1")
            reads: list[str] = []
            read_small = store.files.read_small
            store.files.read_small = lambda name, limit: reads.append(name) or read_small(name, limit)
            for reference in ("v1", digest, "v1", digest):
                async with api.request("GET", f"/v2/app/manifests/{reference}") as response:
                    assert (response.status, await response.read()) == (200, body)
            assert reads == [digest]

            async with other_api.request("DELETE", f"/v2/app/manifests/{digest}") as response:
                assert response.status == 202
            async with api.request("GET", f"/v2/app/manifests/{reference}") as response:
                assert response.status == 404  # the body is known here; the manifest is gone everywhere
