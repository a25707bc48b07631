"""The disk budget of content that arrived only on demand (SPEC 8): blobs filled for a client's miss are
listed in `on_demand` with when they were last served, and the least recently used go first once they
exceed `cache.maxBytes`. A blob that something synced or pushed references leaves the list (it is
permanent from then on), so synced and pushed content is never evicted. Manifests fetched on demand are
kept: they are small, and a manifest whose blobs were evicted fills them again on the next pull."""

from __future__ import annotations

import logging
import os

from connected_registry.storage.metadata import MetadataWrites
from connected_registry.storage.registry import RegistryStore

log = logging.getLogger("connected_registry.cache")


def budget_bytes(max_bytes: int | str, data_dir: str) -> int:
    """`cache.maxBytes`: a number of bytes, or a percentage ("80%") of the data volume's size."""
    if isinstance(max_bytes, int):
        return max_bytes
    stats = os.statvfs(data_dir)
    return stats.f_blocks * stats.f_frsize * int(max_bytes.rstrip("%")) // 100


def on_demand_bytes(store: RegistryStore) -> int:
    return store.metadata.on_demand_bytes()


def is_on_demand(store: RegistryStore, digest: str) -> bool:
    return store.metadata.is_on_demand(digest)


async def touch(store: RegistryStore, digest: str, used: float | None = None) -> None:
    """Served again (at `used`, default now): the blob moves to the back of the eviction queue."""
    used = store.clock() if used is None else used
    await store.metadata.write(lambda tx: tx.touch_on_demand(digest, used))


async def evict(store: RegistryStore, budget: int, busy: set[str] = frozenset()) -> list[tuple[str, int]]:
    """Remove least recently used on-demand blobs until they fit in `budget` bytes; returns what went.
    `busy` blobs (being filled or served from a fill) are passed over."""

    def choose_and_unlist(tx: MetadataWrites) -> list[tuple[str, int]]:
        rows = tx.on_demand_by_age()
        total = sum(size for _, size in rows)
        chosen = []
        for digest, size in rows:
            if total <= budget:
                break
            if digest in busy:
                continue
            chosen.append((digest, size))
            total -= size
            tx.remove_blob(digest)
        tx.unlist_gone_on_demand()
        return chosen

    chosen = await store.metadata.write(choose_and_unlist)
    for digest, size in chosen:
        await store.remove_blob_file(digest)
        log.info("evicted on-demand blob %s (%d bytes): cache.maxBytes is %d bytes", digest, size, budget)
    return chosen
