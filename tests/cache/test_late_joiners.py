"""Single flight, seen from a client that comes late (SPEC 8): while one transfer of a blob trickles in from the
parent, a second client asking for it is served at once from the bytes that have arrived, not after the whole
blob, and the parent still sends the blob once. On the Azure blob store too, where the bytes land as staged blocks
that cannot be read while they arrive: the readers read the fill's local spool."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import aiohttp

from tests.cache.layers import NO_SYNC_DURING_THE_TEST
from tests.support.azurite import BOTH_BLOB_STORES
from tests.support.oci import sha256
from tests.sync.hierarchy import READER, WRITER
from tests.sync.inprocess import (FakeClock, FaultyLink, basic_header, eventually, push_small_image,
                                  start_root_for_leaf, start_runtime, url)

MiB = 1 << 20
pytestmark = BOTH_BLOB_STORES  # the leaf's blob store


class Pull:
    """One client's GET of a blob at the leaf: when its first byte came, how much has come, when it ended."""

    def __init__(self) -> None:
        self.first_byte: float | None = None
        self.received = 0
        self.done: float | None = None
        self.digest: str | None = None

    async def run(self, session: aiohttp.ClientSession, address: str, headers: dict) -> None:
        hasher = hashlib.sha256()
        async with session.get(address, headers=headers) as response:
            assert response.status == 200, await response.text()
            async for chunk in response.content.iter_any():
                if self.first_byte is None:
                    self.first_byte = time.monotonic()
                hasher.update(chunk)
                self.received += len(chunk)
        self.done, self.digest = time.monotonic(), "sha256:" + hasher.hexdigest()


async def test_a_late_client_gets_the_bytes_that_arrived_while_the_one_transfer_goes_on(tmp_path: Path, monkeypatch,
                                                                                        blob_store):
    link = await FaultyLink().start()
    clock = FakeClock()
    root, document = await start_root_for_leaf(tmp_path, clock, monkeypatch,
                                               parent={"endpoint": link.url, **NO_SYNC_DURING_THE_TEST})
    document["onDemand"] = True
    link.upstream = f"http://127.0.0.1:{root.port}"
    leaf = await start_runtime(tmp_path / "leaf", document, clock, blob_store=blob_store.spec)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            layer = os.urandom(3 * MiB)  # about 2 s through the trickle (16 KiB every 10 ms)
            await push_small_image(session, root, "factory/app", "v1", basic_header(*WRITER), layer=layer)
            await link.set("trickle")
            address, headers = url(leaf, f"/v2/factory/app/blobs/{sha256(layer)}"), basic_header(*READER)
            first, late = Pull(), Pull()
            first_task = asyncio.create_task(first.run(session, address, headers))
            await eventually(lambda: _async(first.received >= 512 << 10), timeout=30,
                             what="the first client under way")
            joined = time.monotonic()
            late_task = asyncio.create_task(late.run(session, address, headers))
            await asyncio.gather(first_task, late_task)
    finally:
        await leaf.stop()
        await root.stop()
        await link.close()
    assert first.digest == late.digest == sha256(layer)
    assert link.blob_transfers == 1  # one transfer from the parent for both clients
    # The late client had its first bytes while the transfer still trickled in, well before it ended.
    assert late.first_byte - joined < 0.5, f"{late.first_byte - joined:.2f} s to the late client's first byte"
    assert first.done - late.first_byte > 0.5, "the late client got its first byte only at the end of the transfer"


async def _async(value):
    return value
