"""Done-when 3: a parent that serves wrong bytes for a digest: the client's transfer breaks, nothing is kept,
and a later pull with the parent fixed succeeds (SPEC 8)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import aiohttp
import pytest

from tests.cache.layers import cache_status, cold_leaf_behind_proxy, pull_blob, skopeo_pull
from tests.support.http import basic, request
from tests.support.layouts import make_image, read_blob
from tests.support.oci import sha256
from tests.sync.hierarchy import READER
from tests.sync.instance_api import push_blob, skopeo_push

SIZE = 8 << 20


def present_at(instance, repository: str, digest: str) -> bool:
    """A HEAD answers from what is stored (it never starts a transfer)."""
    return request(f"{instance.url}/v2/{repository}/blobs/{digest}", "HEAD", headers=basic(*READER)).status == 200


async def test_wrong_bytes_from_the_parent_break_the_transfer_and_leave_nothing(tmp_path: Path):
    async with cold_leaf_behind_proxy(tmp_path) as (root, proxy, leaf):
        digest = push_blob(root, "factory/big", os.urandom(SIZE))
        layout = tmp_path / "layout"
        image = make_image(layout, "v1", layers=1, size="2M")
        skopeo_push(layout, "v1", root, "factory/app:v1")
        layer = json.loads(read_blob(layout, image))["layers"][0]["digest"]
        proxy.mode = "corrupt"

        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientPayloadError):  # Content-Length promised, the last byte never sent
                await pull_blob(session, leaf, "factory/big", digest)
        assert not present_at(leaf, "factory/big", digest)
        # (blocking clients run on a thread: the proxy lives on this event loop)
        failed = await asyncio.to_thread(skopeo_pull, leaf, "factory/app:v1", tmp_path / "failed", check=False)
        assert failed.returncode != 0
        assert not present_at(leaf, "factory/app", layer)
        assert cache_status(leaf)["onDemandBytes"] == 0
        assert not [name for name in os.listdir(leaf.process.data_dir / "uploads")], "a partial file was kept"

        proxy.mode = "forward"
        async with aiohttp.ClientSession() as session:
            assert await pull_blob(session, leaf, "factory/big", digest) == (200, digest, SIZE)
        await asyncio.to_thread(skopeo_pull, leaf, "factory/app:v1", tmp_path / "pulled")
        assert sha256(read_blob(tmp_path / "pulled", layer)) == layer
        assert present_at(leaf, "factory/app", layer) and present_at(leaf, "factory/big", digest)
