"""Issue 18: twenty clients pulling one missing blob through three replicas of a cold child (one PostgreSQL database,
one Azure Blob Storage container, a local data directory each) cause exactly one transfer from the parent: a replica
that finds the fill running on another waits for it (an advisory lock keyed by the digest) and serves the committed
blob."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp

from tests.cache.layers import NO_SYNC_DURING_THE_TEST, blob_transfers, pull_blob
from tests.support.clients import RecordingProxy
from tests.support.azurite import Azurite
from tests.support.postgres import METADATA_DSN_VARIABLE, PostgresServer
from tests.sync.hierarchy import start_instance
from tests.sync.instance_api import push_blob

SIZE = 16 << 20
CLIENTS, REPLICAS = 20, 3


async def test_twenty_pulls_through_three_replicas_make_one_transfer(postgres: PostgresServer, azurite: Azurite,
                                                                     tmp_path: Path):
    stores = {METADATA_DSN_VARIABLE: postgres.new_database(), "ACR_REGISTRY_BLOB_STORE": azurite.new_store(),
              **azurite.environment()}
    root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")])
    proxy = RecordingProxy(root.host, timeout=30)  # counts what the parent serves
    replicas = []
    try:
        replicas = [start_instance(tmp_path, "line1-leaf", parent=proxy, repositories=["factory/*"],
                                   parent_settings=NO_SYNC_DURING_THE_TEST, env=stores,
                                   directory_name=f"line1-leaf-{n}") for n in range(REPLICAS)]
        data = os.urandom(SIZE)
        digest = push_blob(root, "factory/big", data)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=90),
                                         connector=aiohttp.TCPConnector(limit=0)) as session:
            results = await asyncio.gather(*(pull_blob(session, replicas[n % REPLICAS], "factory/big", digest)
                                             for n in range(CLIENTS)))
        assert results == [(200, digest, SIZE)] * CLIENTS
        transfers = blob_transfers(proxy, digest)
        print(f"{CLIENTS} pulls through {REPLICAS} replicas: {len(transfers)} transfer(s) from the parent")
        assert len(transfers) == 1, proxy.exchanges
    finally:
        for instance in [*replicas, root]:
            instance.stop()
        proxy.stop()
