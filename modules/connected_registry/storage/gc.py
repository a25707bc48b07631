"""Online garbage collection (SPEC 12). Runs its deletions on the metadata writer thread in small
batches, so pushes interleave with it and pulls (which only read) never wait for it.

Collected: blobs that no manifest references and that nobody touched for the grace period; uploads
abandoned for the grace period (empty ones after an hour); files left by a crash between rename and
commit; and, on a ReadOnly instance, manifests that are untagged, in no tagged index, and not
referrers of kept content.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from dataclasses import dataclass

from connected_registry.oci.digest import is_digest
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
    now = time.time() if now is None else now
    cutoff = now - grace
    report = GcReport()
    if read_only:
        report.manifests_removed = await store.metadata.write(lambda db: _remove_unkept_manifests(db, cutoff))
        store.after_change()
    while True:
        batch = await store.metadata.write(lambda db: _remove_unreferenced_blobs(db, cutoff))
        for digest, size in batch:
            await store.metadata.run_on_writer(store.files.remove, digest)
            report.blobs_removed += 1
            report.bytes_freed += size
        if len(batch) < _BATCH:
            break
    report.uploads_removed = await store.metadata.run_on_writer(_remove_abandoned_uploads, store, now, grace)
    report.stray_files_removed = await store.metadata.run_on_writer(_remove_stray_blob_files, store, cutoff)
    log.info(
        "garbage collection: %d blobs (%d bytes), %d manifests, %d uploads, %d stray files removed",
        report.blobs_removed,
        report.bytes_freed,
        report.manifests_removed,
        report.uploads_removed,
        report.stray_files_removed,
    )
    return report


def _remove_unreferenced_blobs(db: sqlite3.Connection, cutoff: float) -> list[tuple[str, int]]:
    rows = db.execute(
        "SELECT digest, size FROM blobs b WHERE last_used < ? "
        "AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.child = b.digest) "
        "AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = b.digest) LIMIT ?",
        (cutoff, _BATCH),
    ).fetchall()
    for digest, _ in rows:
        db.execute("DELETE FROM repository_blobs WHERE digest = ?", (digest,))
        db.execute("DELETE FROM blobs WHERE digest = ?", (digest,))
        db.execute("DELETE FROM on_demand WHERE digest = ?", (digest,))
    return rows


def _remove_unkept_manifests(db: sqlite3.Connection, cutoff: float) -> int:
    kept: set[tuple[str, str]] = set(db.execute("SELECT repository, digest FROM tags").fetchall())
    frontier = list(kept)
    while frontier:
        repository, digest = frontier.pop()
        followers = db.execute(
            "SELECT repository, child FROM manifest_references WHERE repository = ? AND manifest = ? AND kind = 'manifest' "
            "UNION SELECT repository, digest FROM manifests WHERE repository = ? AND subject = ?",
            (repository, digest, repository, digest),
        ).fetchall()
        for follower in followers:
            if follower not in kept:
                kept.add(follower)
                frontier.append(follower)
    removed = 0
    for repository, digest in db.execute("SELECT repository, digest FROM manifests WHERE created < ?", (cutoff,)).fetchall():
        if (repository, digest) in kept:
            continue
        db.execute("DELETE FROM manifest_references WHERE repository = ? AND manifest = ?", (repository, digest))
        db.execute("DELETE FROM manifests WHERE repository = ? AND digest = ?", (repository, digest))
        removed += 1
    return removed


def _remove_abandoned_uploads(store: RegistryStore, now: float, grace: float) -> int:
    """Sessions (and files a crash left in the uploads folder) untouched for `grace`, or empty for an hour."""
    names = {row[0] for row in store.metadata.writer.execute("SELECT id FROM uploads").fetchall()}
    names.update(entry.name for entry in os.scandir(store.files.incoming))
    return store.metadata.transaction(
        lambda db: sum(store.uploads.remove_if_abandoned(db, name, now, grace) for name in sorted(names)))


def _remove_stray_blob_files(store: RegistryStore, cutoff: float) -> int:
    """Files renamed into place whose metadata commit never happened (a crash in between)."""
    removed = 0
    db = store.metadata.writer
    for algorithm_dir in os.scandir(store.files.root):
        for prefix_dir in os.scandir(algorithm_dir.path):
            for entry in os.scandir(prefix_dir.path):
                digest = f"{algorithm_dir.name}:{entry.name}"
                if not is_digest(digest):
                    continue
                if db.execute("SELECT 1 FROM blobs WHERE digest = ?", (digest,)).fetchone() is not None:
                    continue
                try:
                    if entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    pass
    return removed
