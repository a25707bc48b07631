"""A fill whose transfer from the parent breaks off goes on at once with a Range request: the client that
is streaming it sees nothing but a complete, correct body (SPEC 7.2, 8); on either blob store of the leaf (on Azure
the resumed bytes land in the same staged session and the readers' spool)."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp

from tests.cache.layers import cache_status, cold_leaf_behind_proxy, pull_blob
from tests.support.azurite import BOTH_BLOB_STORES
from tests.sync.instance_api import push_blob

SIZE = 16 << 20
CUT_AFTER = 5 << 20
pytestmark = BOTH_BLOB_STORES  # the leaf's blob store


async def test_a_transfer_that_breaks_off_resumes_with_range_while_the_client_waits(tmp_path: Path, blob_store):
    async with cold_leaf_behind_proxy(tmp_path, leaf_env=blob_store.serve_env) as (root, proxy, leaf):
        digest = push_blob(root, "factory/big", os.urandom(SIZE))
        proxy.mode, proxy.cut_after = "cut", CUT_AFTER

        async with aiohttp.ClientSession() as session:
            assert await pull_blob(session, leaf, "factory/big", digest) == (200, digest, SIZE)

        assert proxy.ranges[0] is None and len(proxy.ranges) == 2, proxy.ranges
        resumed_from = int(proxy.ranges[1].removeprefix("bytes=").rstrip("-"))
        assert 0 < resumed_from <= CUT_AFTER
        assert cache_status(leaf)["bytesFetchedOnDemand"] == SIZE  # nothing fetched twice
