"""SQLite (and PostgreSQL, which runs these same queries): upload sessions, the list of blobs that came on demand
(the cache budget), and what garbage collection looks for."""

from __future__ import annotations

import sqlite3
from typing import Iterable


class HousekeepingReads:
    db: sqlite3.Connection

    def upload_repository(self, upload_id: str) -> str | None:
        row = self.db.execute("SELECT repository FROM uploads WHERE id = ?", (upload_id,)).fetchone()
        return row[0] if row else None

    def upload_ids(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT id FROM uploads")]

    def upload_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM uploads").fetchone()[0]

    def client_uploads_of(self, owner: str) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT id FROM uploads WHERE owner = ? AND owner IS NOT NULL",
                                                  (owner,))]

    def client_uploads_in(self, repository: str) -> list[str]:
        return [row[0] for row in self.db.execute(
            "SELECT id FROM uploads WHERE repository = ? AND owner IS NOT NULL", (repository,))]

    def on_demand_bytes(self) -> int:
        return self.db.execute("SELECT CAST(COALESCE(SUM(o.size), 0) AS BIGINT) "  # PostgreSQL's SUM is numeric
                               "FROM on_demand o JOIN blobs b USING (digest)").fetchone()[0]

    def is_on_demand(self, digest: str) -> bool:
        return self.db.execute("SELECT 1 FROM on_demand WHERE digest = ?", (digest,)).fetchone() is not None

    def on_demand_by_age(self) -> list[tuple[str, int]]:
        return self.db.execute("SELECT o.digest, o.size FROM on_demand o JOIN blobs b USING (digest) "
                               "ORDER BY o.last_used, o.digest").fetchall()

    def unreferenced_blobs(self, used_before: float, limit: int) -> list[tuple[str, int]]:
        return self.db.execute(
            "SELECT digest, size FROM blobs b WHERE last_used < ? "
            "AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.child = b.digest) "
            "AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = b.digest) LIMIT ?",
            (used_before, limit),
        ).fetchall()

    def tagged_manifests(self) -> list[tuple[str, str]]:
        return self.db.execute("SELECT repository, digest FROM tags").fetchall()

    def manifest_followers(self, repository: str, digest: str) -> list[tuple[str, str]]:
        return self.db.execute(
            "SELECT repository, child FROM manifest_references WHERE repository = ? AND manifest = ? "
            "AND kind = 'manifest' UNION SELECT repository, digest FROM manifests WHERE repository = ? AND subject = ?",
            (repository, digest, repository, digest),
        ).fetchall()

    def manifests_created_before(self, cutoff: float) -> list[tuple[str, str]]:
        return self.db.execute("SELECT repository, digest FROM manifests WHERE created < ?", (cutoff,)).fetchall()


class HousekeepingWrites:
    db: sqlite3.Connection

    def add_upload(self, upload_id: str, repository: str, started: float, owner: str | None) -> None:
        self.db.execute("INSERT INTO uploads (id, repository, started, owner) VALUES (?, ?, ?, ?)",
                        (upload_id, repository, started, owner))

    def remove_upload(self, upload_id: str) -> None:
        self.db.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))

    def list_on_demand(self, digest: str, size: int, now: float) -> None:
        self.db.execute("INSERT OR IGNORE INTO on_demand (digest, size, last_used) VALUES (?, ?, ?)",
                        (digest, size, now))

    def unlist_on_demand(self, digests: Iterable[str]) -> None:
        self.db.executemany("DELETE FROM on_demand WHERE digest = ?", [(digest,) for digest in digests])

    def touch_on_demand(self, digest: str, used: float) -> None:
        self.db.execute("UPDATE on_demand SET last_used = ? WHERE digest = ? AND last_used < ?", (used, digest, used))

    def unlist_gone_on_demand(self) -> None:
        self.db.execute("DELETE FROM on_demand WHERE digest NOT IN (SELECT digest FROM blobs)")
