"""SQLite (and PostgreSQL, which runs these same queries, storage/postgres/dialect.py): blobs, repositories,
manifests with what they reference, tags and referrers."""

from __future__ import annotations

import json
import sqlite3
from typing import Iterable

from connected_registry.oci.manifest import ParsedManifest
from connected_registry.storage.records import ManifestEntry, Referrer

# The manifests under one (an index's children at any depth, not those left out by design), then any blob or
# child manifest of theirs that is not here and not left out. (The tree starts from the manifest's own reference
# rows, not from the bare parameter, so its column has the table's collation in PostgreSQL too: a manifest that
# references nothing misses nothing.)
_MISSING_PARTS = (
    "WITH RECURSIVE tree(digest) AS (SELECT manifest FROM manifest_references WHERE repository = ? AND manifest = ? "
    "UNION SELECT r.child FROM manifest_references r "
    "JOIN tree ON r.manifest = tree.digest WHERE r.repository = ? AND r.kind = 'manifest' AND r.left_out = 0) "
    "SELECT 1 FROM manifest_references r JOIN tree ON r.manifest = tree.digest WHERE r.repository = ? "
    "AND r.left_out = 0 AND ("
    "(r.kind = 'blob' AND NOT EXISTS (SELECT 1 FROM repository_blobs b WHERE b.repository = r.repository "
    "AND b.digest = r.child)) OR (r.kind = 'manifest' AND NOT EXISTS (SELECT 1 FROM manifests m "
    "WHERE m.repository = r.repository AND m.digest = r.child))) LIMIT 1"
)


def _paged(sql: str, parameters: tuple, limit: int | None) -> tuple[str, tuple]:
    return (sql + " LIMIT ?", parameters + (limit,)) if limit is not None else (sql, parameters)


class ContentReads:
    db: sqlite3.Connection

    def blob_size(self, repository: str, digest: str) -> int | None:
        row = self.db.execute("SELECT b.size FROM repository_blobs r JOIN blobs b ON b.digest = r.digest "
                              "WHERE r.repository = ? AND r.digest = ?", (repository, digest)).fetchone()
        return row[0] if row else None

    def links_blob(self, repository: str, digest: str) -> bool:
        return self.db.execute("SELECT 1 FROM repository_blobs WHERE repository = ? AND digest = ?",
                               (repository, digest)).fetchone() is not None

    def holds_blob(self, digest: str) -> bool:
        return self.db.execute("SELECT 1 FROM blobs WHERE digest = ?", (digest,)).fetchone() is not None

    def repositories_with_blob(self, digest: str) -> list[str]:
        return [row[0] for row in self.db.execute(
            "SELECT repository FROM repository_blobs WHERE digest = ? ORDER BY repository", (digest,))]

    def references_blob(self, repository: str, digest: str) -> bool:
        return self.db.execute(
            "SELECT 1 FROM manifest_references WHERE child = ? AND repository = ? AND kind = 'blob' LIMIT 1",
            (digest, repository)).fetchone() is not None

    def manifest_by_digest(self, repository: str, digest: str) -> ManifestEntry | None:
        row = self.db.execute("SELECT digest, media_type, size, subject FROM manifests WHERE repository = ? "
                              "AND digest = ?", (repository, digest)).fetchone()
        return ManifestEntry(*row) if row else None

    def manifest_by_tag(self, repository: str, tag: str) -> ManifestEntry | None:
        row = self.db.execute(
            "SELECT m.digest, m.media_type, m.size, m.subject FROM tags t JOIN manifests m "
            "ON m.repository = t.repository AND m.digest = t.digest WHERE t.repository = ? AND t.tag = ?",
            (repository, tag)).fetchone()
        return ManifestEntry(*row) if row else None

    def tag_digest(self, repository: str, tag: str) -> str | None:
        row = self.db.execute("SELECT digest FROM tags WHERE repository = ? AND tag = ?", (repository, tag)).fetchone()
        return row[0] if row else None

    def manifest_digests(self, repository: str) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT digest FROM manifests WHERE repository = ?", (repository,))]

    def incomplete(self, repository: str, digest: str) -> bool:
        return self.db.execute(_MISSING_PARTS, (repository, digest, repository, repository)).fetchone() is not None

    def left_out_children(self, repository: str, digest: str) -> set[str]:
        return {row[0] for row in self.db.execute(
            "SELECT child FROM manifest_references WHERE repository = ? AND manifest = ? AND left_out = 1",
            (repository, digest))}

    def left_out_by(self, repository: str, digest: str) -> str | None:
        row = self.db.execute("SELECT manifest FROM manifest_references WHERE repository = ? AND child = ? "
                              "AND left_out = 1 ORDER BY manifest LIMIT 1", (repository, digest)).fetchone()
        return row[0] if row else None

    def repository_exists(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM repositories WHERE name = ?", (name,)).fetchone() is not None

    def list_tags(self, repository: str, limit: int | None, last: str | None) -> list[str]:
        sql, parameters = _paged("SELECT tag FROM tags WHERE repository = ? AND tag > ? ORDER BY tag",
                                 (repository, last or ""), limit)
        return [row[0] for row in self.db.execute(sql, parameters)]

    def list_repositories(self, limit: int | None, last: str | None) -> list[str]:
        sql, parameters = _paged("SELECT name FROM repositories WHERE name > ? ORDER BY name", (last or "",), limit)
        return [row[0] for row in self.db.execute(sql, parameters)]

    def referrers(self, repository: str, subject: str, artifact_type: str | None) -> list[Referrer]:
        sql = ("SELECT digest, media_type, size, artifact_type, annotations FROM manifests "
               "WHERE repository = ? AND subject = ?")
        parameters: tuple = (repository, subject)
        if artifact_type is not None:
            sql += " AND artifact_type = ?"
            parameters += (artifact_type,)
        sql += " ORDER BY created, digest"
        return [Referrer(row[0], row[1], row[2], row[3], json.loads(row[4]) if row[4] else None)
                for row in self.db.execute(sql, parameters)]


class ContentWrites:
    db: sqlite3.Connection

    def add_repository(self, name: str, now: float) -> None:
        self.db.execute("INSERT OR IGNORE INTO repositories (name, created) VALUES (?, ?)", (name, now))

    def add_blob(self, digest: str, size: int, origin: str, now: float) -> bool:
        return self.db.execute("INSERT OR IGNORE INTO blobs (digest, size, origin, created, last_used) "
                               "VALUES (?, ?, ?, ?, ?)", (digest, size, origin, now, now)).rowcount == 1

    def touch_blobs(self, digests: Iterable[str], now: float) -> None:
        self.db.executemany("UPDATE blobs SET last_used = ? WHERE digest = ?", [(now, digest) for digest in digests])

    def link_blob(self, repository: str, digest: str, now: float) -> None:
        self.db.execute("INSERT OR IGNORE INTO repository_blobs (repository, digest, created) VALUES (?, ?, ?)",
                        (repository, digest, now))

    def unlink_blob(self, repository: str, digest: str) -> bool:
        return self.db.execute("DELETE FROM repository_blobs WHERE repository = ? AND digest = ?",
                               (repository, digest)).rowcount > 0

    def remove_blob(self, digest: str) -> None:
        self.db.execute("DELETE FROM repository_blobs WHERE digest = ?", (digest,))
        self.db.execute("DELETE FROM blobs WHERE digest = ?", (digest,))
        self.db.execute("DELETE FROM on_demand WHERE digest = ?", (digest,))

    def add_manifest(self, repository: str, digest: str, size: int, parsed: ParsedManifest, origin: str,
                     now: float) -> bool:
        annotations = json.dumps(parsed.annotations) if parsed.annotations else None
        inserted = self.db.execute(
            "INSERT OR IGNORE INTO manifests (repository, digest, media_type, size, artifact_type, subject, "
            "annotations, origin, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (repository, digest, parsed.media_type, size, parsed.artifact_type, parsed.subject, annotations, origin,
             now),
        ).rowcount
        if inserted:
            references = [(repository, digest, blob.digest, "blob") for blob in parsed.blobs]
            references += [(repository, digest, child.digest, "manifest") for child in parsed.manifests]
            self.db.executemany("INSERT OR IGNORE INTO manifest_references (repository, manifest, child, kind) "
                                "VALUES (?, ?, ?, ?)", references)
        return bool(inserted)

    def set_left_out(self, repository: str, digest: str, children: Iterable[str]) -> None:
        self.db.execute("UPDATE manifest_references SET left_out = 0 WHERE repository = ? AND manifest = ? "
                        "AND left_out = 1", (repository, digest))
        self.db.executemany("UPDATE manifest_references SET left_out = 1 WHERE repository = ? AND manifest = ? "
                            "AND child = ? AND kind = 'manifest'", [(repository, digest, child) for child in children])

    def remove_manifest(self, repository: str, digest: str) -> None:
        self.db.execute("DELETE FROM tags WHERE repository = ? AND digest = ?", (repository, digest))
        self.db.execute("DELETE FROM manifest_references WHERE repository = ? AND manifest = ?", (repository, digest))
        self.db.execute("DELETE FROM manifests WHERE repository = ? AND digest = ?", (repository, digest))

    def set_tag(self, repository: str, tag: str, digest: str, now: float) -> None:
        self.db.execute(
            "INSERT INTO tags (repository, tag, digest, updated) VALUES (?, ?, ?, ?) ON CONFLICT (repository, tag) "
            "DO UPDATE SET digest = excluded.digest, updated = excluded.updated", (repository, tag, digest, now))

    def remove_tag(self, repository: str, tag: str) -> None:
        self.db.execute("DELETE FROM tags WHERE repository = ? AND tag = ?", (repository, tag))
