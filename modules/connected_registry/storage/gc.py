"""Online garbage collection (SPEC 12). Runs its deletions on the metadata writer thread in small
batches, so pushes interleave with it and pulls (which only read) never wait for it.

Collected: blobs that no manifest references and that nobody touched for the grace period; uploads
abandoned for the grace period (empty ones after an hour); files left by a crash between rename and
commit; and, on a ReadOnly instance, manifests that are untagged, in no tagged index, and not
referrers of kept content.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from connected_registry.storage.metadata import MetadataReads, MetadataWrites
from connected_registry.storage.registry import RegistryStore

log = logging.getLogger("connected_registry.gc")

GRACE_SECONDS = 24 * 3600
_BATCH = 500


@dataclass
class GcReport:
    blobs_removed: int = 0
    bytes_freed: int = 0
    uploads_removed: int = 0
    manifests_removed: int = 0
    stray_files_removed: int = 0


async def collect_garbage(
    store: RegistryStore, *, read_only: bool = False, now: float | None = None, grace: float = GRACE_SECONDS
) -> GcReport:
    """`now`: the store's clock unless given."""
    now = store.clock() if now is None else now
    cutoff = now - grace
    report = GcReport()
    if read_only:
        report.manifests_removed = await store.metadata.write(lambda tx: _remove_unkept_manifests(tx, cutoff))
        store.after_change()
    while True:
        batch = await store.metadata.write(lambda tx: _remove_unreferenced_blobs(tx, cutoff))
        for digest, size in batch:
            await store.remove_blob_file(digest)
            report.blobs_removed += 1
            report.bytes_freed += size
        if len(batch) < _BATCH:
            break
    report.uploads_removed = await store.metadata.serialized(
        lambda reads: _remove_abandoned_uploads(reads, store, now, grace))
    report.stray_files_removed = await store.metadata.serialized(
        lambda reads: _remove_stray_blob_files(reads, store, cutoff))
    log.info(
        "garbage collection: %d blobs (%d bytes), %d manifests, %d uploads, %d stray files removed",
        report.blobs_removed,
        report.bytes_freed,
        report.manifests_removed,
        report.uploads_removed,
        report.stray_files_removed,
    )
    return report


def _remove_unreferenced_blobs(tx: MetadataWrites, cutoff: float) -> list[tuple[str, int]]:
    rows = tx.unreferenced_blobs(cutoff, _BATCH)
    for digest, _ in rows:
        tx.remove_blob(digest)
    return rows


def _remove_unkept_manifests(tx: MetadataWrites, cutoff: float) -> int:
    kept: set[tuple[str, str]] = set(tx.tagged_manifests())
    frontier = list(kept)
    while frontier:
        for follower in tx.manifest_followers(*frontier.pop()):
            if follower not in kept:
                kept.add(follower)
                frontier.append(follower)
    removed = 0
    for repository, digest in tx.manifests_created_before(cutoff):
        if (repository, digest) in kept:
            continue
        tx.remove_manifest(repository, digest)  # untagged: only its references and itself go
        removed += 1
    return removed


def _remove_abandoned_uploads(reads: MetadataReads, store: RegistryStore, now: float, grace: float) -> int:
    """Sessions (and files a crash left in the uploads folder) untouched for `grace`, or empty for an hour."""
    names = set(reads.upload_ids())
    names.update(store.uploads.leftover_names())
    return store.metadata.write_now(
        lambda tx: sum(store.uploads.remove_if_abandoned(tx, name, now, grace) for name in sorted(names)))


def _remove_stray_blob_files(reads: MetadataReads, store: RegistryStore, cutoff: float) -> int:
    """Blobs stored whose metadata commit never happened (a crash in between)."""
    return store.files.remove_strays(reads.holds_blob, cutoff)
