"""Done-when 2: twenty clients asking at once for one uncached 100 MiB blob cause one transfer from the
parent, and each gets the right bytes (SPEC 8)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp

from tests.cache.layers import blob_transfers, cache_status, pull_blob, start_cold_child
from tests.support.clients import RecordingProxy
from tests.support.metrics import scrape
from tests.support.oci import sha256
from tests.sync.hierarchy import start_instance
from tests.sync.instance_api import push_blob

SIZE = 100 << 20
CLIENTS = 20


async def test_twenty_concurrent_pulls_of_one_cold_blob_make_one_transfer(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")])
    proxy = RecordingProxy(root.host, timeout=30)  # counts what the parent serves
    leaf = start_cold_child(tmp_path, "line1-leaf", proxy)
    try:
        data = os.urandom(SIZE)
        digest = push_blob(root, "factory/big", data)
        started = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=90)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
            # one of them resumes a download: a Range from the middle of the blob, served as it arrives
            results = await asyncio.gather(*(pull_blob(session, leaf, "factory/big", digest) for _ in range(CLIENTS)),
                                           pull_blob(session, leaf, "factory/big", digest, f"bytes={SIZE // 2}-"))
        elapsed = time.monotonic() - started

        assert results[:CLIENTS] == [(200, digest, SIZE)] * CLIENTS
        assert results[CLIENTS] == (206, sha256(data[SIZE // 2:]), SIZE - SIZE // 2)
        assert len(blob_transfers(proxy, digest)) == 1, proxy.exchanges
        status = cache_status(leaf)
        assert status["bytesFetchedOnDemand"] == SIZE
        # several clients missed together and shared the one transfer (any that came after it ended were hits)
        assert status["misses"] >= 2 and status["misses"] + status["hits"] == CLIENTS + 1, status
        assert elapsed < 60, f"twenty pulls of 100 MiB took {elapsed:.1f}s"
        metrics = scrape(leaf)  # /metrics carries the same counters (SPEC 12)
        assert metrics[("connected_registry_cache_misses_total", ())] == status["misses"]
        assert metrics[("connected_registry_cache_bytes_fetched_on_demand_total", ())] == SIZE
    finally:
        leaf.stop()
        proxy.stop()
        root.stop()
