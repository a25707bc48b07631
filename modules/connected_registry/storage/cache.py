"""The disk budget of content that arrived only on demand (SPEC 8): blobs filled for a client's miss are
listed in `on_demand` with when they were last served, and the least recently used go first once they
exceed `cache.maxBytes`. A blob that something synced or pushed references leaves the list (it is
permanent from then on), so synced and pushed content is never evicted. Manifests fetched on demand are
kept: they are small, and a manifest whose blobs were evicted fills them again on the next pull."""

from __future__ import annotations

import logging
import os
import sqlite3

from connected_registry.storage.registry import RegistryStore

log = logging.getLogger("connected_registry.cache")


def budget_bytes(max_bytes: int | str, data_dir: str) -> int:
    """`cache.maxBytes`: a number of bytes, or a percentage ("80%") of the data volume's size."""
    if isinstance(max_bytes, int):
        return max_bytes
    stats = os.statvfs(data_dir)
    return stats.f_blocks * stats.f_frsize * int(max_bytes.rstrip("%")) // 100


def on_demand_bytes(store: RegistryStore) -> int:
    row = store.metadata.read_one("SELECT COALESCE(SUM(o.size), 0) FROM on_demand o JOIN blobs b USING (digest)")
    return row[0]


def is_on_demand(store: RegistryStore, digest: str) -> bool:
    return store.metadata.read_one("SELECT 1 FROM on_demand WHERE digest = ?", (digest,)) is not None


async def touch(store: RegistryStore, digest: str, used: float | None = None) -> None:
    """Served again (at `used`, default now): the blob moves to the back of the eviction queue."""
    used = store.clock() if used is None else used
    await store.metadata.write(lambda db: db.execute(
        "UPDATE on_demand SET last_used = MAX(last_used, ?) WHERE digest = ?", (used, digest)))


async def evict(store: RegistryStore, budget: int, busy: set[str] = frozenset()) -> list[tuple[str, int]]:
    """Remove least recently used on-demand blobs until they fit in `budget` bytes; returns what went.
    `busy` blobs (being filled or served from a fill) are passed over."""

    def choose_and_unlist(db: sqlite3.Connection) -> list[tuple[str, int]]:
        rows = db.execute("SELECT o.digest, o.size FROM on_demand o JOIN blobs b USING (digest) "
                          "ORDER BY o.last_used, o.digest").fetchall()
        total = sum(size for _, size in rows)
        chosen = []
        for digest, size in rows:
            if total <= budget:
                break
            if digest in busy:
                continue
            chosen.append((digest, size))
            total -= size
            db.execute("DELETE FROM repository_blobs WHERE digest = ?", (digest,))
            db.execute("DELETE FROM blobs WHERE digest = ?", (digest,))
            db.execute("DELETE FROM on_demand WHERE digest = ?", (digest,))
        db.execute("DELETE FROM on_demand WHERE digest NOT IN (SELECT digest FROM blobs)")  # gone by gc or delete
        return chosen

    chosen = await store.metadata.write(choose_and_unlist)
    for digest, size in chosen:
        await store.metadata.run_on_writer(store.files.remove, digest)
        log.info("evicted on-demand blob %s (%d bytes): cache.maxBytes is %d bytes", digest, size, budget)
    return chosen
