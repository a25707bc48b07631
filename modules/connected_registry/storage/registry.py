"""The registry's storage facade: blobs, uploads, manifests, tags, referrers, events and outbox.

Every change that clients can see (a tag set, a manifest put, a delete) commits in one SQLite
transaction together with its events and, on a ReadWrite child, its outbox entry.
Reads of manifests and tags are served from a small in-memory cache, dropped on every write.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

from connected_registry.oci.digest import digest_of, is_digest, parse_digest
from connected_registry.oci.errors import OciError
from connected_registry.oci.manifest import MAX_MANIFEST_BYTES, ParsedManifest, parse_manifest
from connected_registry.oci.names import validate_tag
from connected_registry.storage.blobs import BlobFiles
from connected_registry.storage.control import ControlState
from connected_registry.storage.disk import DIRECTORY_MODE, Disk, restrict_modes, storage_error_from_os
from connected_registry.storage.metadata import MetadataDB
from connected_registry.storage.uploads import Uploads
from connected_registry.waits import wait_event

_MANIFEST_CACHE_BYTES = 32 << 20
_PROBE_BYTES = 1 << 20  # room a recovered volume must have: a little more than a metadata commit needs


@dataclass(frozen=True)
class ManifestRecord:
    digest: str
    media_type: str
    size: int
    body: bytes
    subject: str | None


@dataclass(frozen=True)
class Referrer:
    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    annotations: dict | None


@dataclass(frozen=True)
class PutResult:
    digest: str
    subject: str | None


def utc_timestamp(seconds: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if seconds is None else seconds, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RegistryStore:
    def __init__(
        self,
        data_dir: str,
        *,
        origin: str = "local",
        record_outbox: bool = False,
        disk: Disk | None = None,
        clock=time.time,
    ) -> None:
        self.data_dir = data_dir
        self.origin = origin
        self.record_outbox = record_outbox
        self.disk = disk or Disk()
        self.clock = clock  # injected, so message TTLs are tested without waiting
        try:
            os.makedirs(data_dir, DIRECTORY_MODE, exist_ok=True)
            restrict_modes(data_dir)
        except OSError as error:
            raise storage_error_from_os(error, f"creating the data directory {data_dir}") from error
        self.files = BlobFiles(data_dir, self.disk)
        self.metadata = MetadataDB(data_dir, self.disk)
        self.io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="blob-io")
        self.uploads = Uploads(self.files, self.metadata, self.io)
        self._manifest_cache: OrderedDict[tuple[str, str], ManifestRecord] = OrderedDict()
        self._manifest_cache_bytes = 0
        self._events_written: asyncio.Event | None = None
        self.closing = False  # set at shutdown: long polls answer at once
        self.control = ControlState(self.metadata)

    def close(self) -> None:
        self.metadata.close()
        self.io.shutdown(wait=True)

    async def check_writable(self) -> None:
        """A small durable write (a file fsynced, a metadata commit); raises StorageError while the volume
        cannot take it. The probe that tells a full disk has recovered."""

        def probe(db: sqlite3.Connection) -> None:
            self.files.write_probe(_PROBE_BYTES)
            db.execute("INSERT INTO state (key, value) VALUES ('diskChecked', ?) ON CONFLICT (key) DO UPDATE SET "
                       "value = excluded.value", (utc_timestamp(self.clock()),))

        await self.metadata.write(probe)

    # --- blobs ----------------------------------------------------------------------------------

    def blob_size(self, repository: str, digest: str) -> int | None:
        """Size of a blob visible in `repository`, or None."""
        row = self.metadata.read_one(
            "SELECT b.size FROM repository_blobs r JOIN blobs b ON b.digest = r.digest "
            "WHERE r.repository = ? AND r.digest = ?",
            (repository, digest),
        )
        return row[0] if row else None

    def blob_path(self, digest: str) -> str:
        return self.files.path(digest)

    async def mount_blob(self, repository: str, source: str, digest: str) -> bool:
        """Link a blob of `source` into `repository`; False when `source` does not have it."""
        if self.blob_size(source, digest) is None:
            return False
        now = self.clock()

        def link(db: sqlite3.Connection) -> bool:
            if db.execute("SELECT 1 FROM repository_blobs WHERE repository = ? AND digest = ?", (source, digest)).fetchone() is None:
                return False
            db.execute(
                "INSERT OR IGNORE INTO repository_blobs (repository, digest, created) VALUES (?, ?, ?)",
                (repository, digest, now),
            )
            db.execute("UPDATE blobs SET last_used = ? WHERE digest = ?", (now, digest))
            return True

        return await self.metadata.write(link)

    async def link_blob(self, repository: str, digest: str) -> bool:
        """Make a blob already stored (in any repository) visible in `repository`: no transfer needed. Only for a
        blob known to belong there (see `referenced_blob`, or the parent said so): never on a client's word."""
        now = self.clock()

        def link(db: sqlite3.Connection) -> bool:
            if db.execute("SELECT 1 FROM blobs WHERE digest = ?", (digest,)).fetchone() is None:
                return False
            if not self.files.exists(digest):
                return False
            db.execute("INSERT OR IGNORE INTO repository_blobs (repository, digest, created) VALUES (?, ?, ?)",
                       (repository, digest, now))
            db.execute("UPDATE blobs SET last_used = ? WHERE digest = ?", (now, digest))
            return True

        return await self.metadata.write(link)

    def referenced_blob(self, repository: str, digest: str) -> bool:
        """Whether a manifest of `repository` stored here references the blob: then it belongs there (a pushed
        manifest's blobs were checked in `repository`, a synced or fetched one came from the parent's)."""
        return self.metadata.read_one(
            "SELECT 1 FROM manifest_references WHERE child = ? AND repository = ? AND kind = 'blob' LIMIT 1",
            (digest, repository)) is not None

    def holds_blob(self, digest: str) -> bool:
        """Whether the blob is stored here, in any repository."""
        return self.metadata.read_one("SELECT 1 FROM blobs WHERE digest = ?", (digest,)) is not None

    def repositories_with_blob(self, digest: str) -> list[str]:
        return [row[0] for row in self.metadata.read(
            "SELECT repository FROM repository_blobs WHERE digest = ? ORDER BY repository", (digest,))]

    async def delete_blob(self, repository: str, digest: str) -> None:
        def unlink(db: sqlite3.Connection) -> None:
            cursor = db.execute("DELETE FROM repository_blobs WHERE repository = ? AND digest = ?", (repository, digest))
            if cursor.rowcount == 0:
                raise OciError("BLOB_UNKNOWN", f"blob {digest} is not in repository {repository}")

        await self.metadata.write(unlink)

    # --- manifests --------------------------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str) -> ManifestRecord | None:
        key = (repository, reference)
        record = self._manifest_cache.get(key)
        if record is not None:
            self._manifest_cache.move_to_end(key)
            return record
        if is_digest(reference):
            row = self.metadata.read_one(
                "SELECT digest, media_type, size, subject FROM manifests WHERE repository = ? AND digest = ?",
                (repository, reference),
            )
        else:
            row = self.metadata.read_one(
                "SELECT m.digest, m.media_type, m.size, m.subject FROM tags t JOIN manifests m "
                "ON m.repository = t.repository AND m.digest = t.digest WHERE t.repository = ? AND t.tag = ?",
                (repository, reference),
            )
        if row is None:
            return None
        try:
            with open(self.files.path(row[0]), "rb") as file:
                body = file.read(MAX_MANIFEST_BYTES + 1)
        except FileNotFoundError:
            return None
        record = ManifestRecord(row[0], row[1], row[2], body, row[3])
        self._remember(key, record)
        return record

    def _remember(self, key: tuple[str, str], record: ManifestRecord) -> None:
        self._manifest_cache[key] = record
        self._manifest_cache_bytes += len(record.body)
        while self._manifest_cache_bytes > _MANIFEST_CACHE_BYTES and self._manifest_cache:
            _, dropped = self._manifest_cache.popitem(last=False)
            self._manifest_cache_bytes -= len(dropped.body)

    def after_change(self) -> None:
        """After any write that readers can see: drop cached manifests, wake the event feed."""
        self._manifest_cache.clear()
        self._manifest_cache_bytes = 0
        if self._events_written is not None:  # wake the event feed's long polls
            self._events_written.set()
            self._events_written = None

    async def wait_for_events(self, after: int, timeout: float) -> None:
        """Return when an event newer than `after` exists, or after `timeout` seconds."""
        if self.closing:
            return
        if self._events_written is None:
            self._events_written = asyncio.Event()
        signal = self._events_written
        if self.metadata.read_one("SELECT 1 FROM events WHERE seq > ? LIMIT 1", (after,)):
            return
        await wait_event(signal, timeout)

    async def put_manifest(
        self, repository: str, reference: str, body: bytes, content_type: str | None, origin: str | None = None,
        from_parent: bool = False, on_demand: bool = False,
    ) -> PutResult:
        """Store a manifest (and tag). `from_parent`: written by the sync, so nothing goes to the outbox.
        `on_demand`: fetched for a client's miss (implies from_parent); its blobs may still be at the parent,
        the client asks for them next. Anything else makes the manifest's content permanent."""
        from_parent = from_parent or on_demand
        if len(body) > MAX_MANIFEST_BYTES:
            raise OciError("MANIFEST_TOO_LARGE", "manifest is larger than the 4 MiB limit")
        if is_digest(reference):
            algorithm, _ = parse_digest(reference)
            digest = digest_of(body, algorithm)
            if digest != reference:
                raise OciError(
                    "DIGEST_INVALID",
                    f"manifest body has digest {digest}, not {reference}",
                    detail={"expected": reference, "actual": digest},
                )
            tag = None
        else:
            tag = validate_tag(reference)
            digest = digest_of(body)
        parsed = parse_manifest(body, content_type)
        origin = origin or self.origin
        now = self.clock()

        def put(db: sqlite3.Connection) -> None:
            if not on_demand:
                self._check_references(db, repository, parsed)
            created = not self.files.exists(digest)
            self.files.write_small(body, digest)
            try:
                self._record_manifest(db, repository, digest, len(body), parsed, tag, origin, now, from_parent)
                if not on_demand:  # synced or pushed: what it references is no longer cache content
                    db.executemany("DELETE FROM on_demand WHERE digest = ?",
                                   [(child,) for child in (digest, *(b.digest for b in parsed.blobs))])
            except BaseException:
                if created:  # no row will name it: leave nothing behind
                    self.files.remove(digest)
                raise

        try:
            await self.metadata.write(put)
        finally:
            self.after_change()
        return PutResult(digest, parsed.subject)

    def incomplete(self, repository: str, digest: str) -> bool:
        """A manifest stored on demand whose blobs or child manifests (at any depth) are not all here yet."""
        row = self.metadata.read_one(
            "WITH RECURSIVE tree(digest) AS (SELECT ? UNION SELECT r.child FROM manifest_references r "
            "JOIN tree ON r.manifest = tree.digest WHERE r.repository = ? AND r.kind = 'manifest') "
            "SELECT 1 FROM manifest_references r JOIN tree ON r.manifest = tree.digest WHERE r.repository = ? AND ("
            "(r.kind = 'blob' AND NOT EXISTS (SELECT 1 FROM repository_blobs b WHERE b.repository = r.repository "
            "AND b.digest = r.child)) OR (r.kind = 'manifest' AND NOT EXISTS (SELECT 1 FROM manifests m "
            "WHERE m.repository = r.repository AND m.digest = r.child))) LIMIT 1",
            (digest, repository, repository),
        )
        return row is not None

    @staticmethod
    def _check_references(db: sqlite3.Connection, repository: str, parsed: ParsedManifest) -> None:
        missing = [
            blob.digest
            for blob in parsed.blobs
            if db.execute(
                "SELECT 1 FROM repository_blobs WHERE repository = ? AND digest = ?", (repository, blob.digest)
            ).fetchone() is None
        ] + [
            child.digest
            for child in parsed.manifests
            if db.execute(
                "SELECT 1 FROM manifests WHERE repository = ? AND digest = ?", (repository, child.digest)
            ).fetchone() is None
        ]
        if missing:
            raise OciError(
                "MANIFEST_BLOB_UNKNOWN",
                f"manifest references {len(missing)} blob(s) or manifest(s) not in repository {repository}: "
                f"push them first ({', '.join(missing[:3])}{'…' if len(missing) > 3 else ''})",
                detail={"missing": missing[:20]},
            )

    def _record_manifest(
        self,
        db: sqlite3.Connection,
        repository: str,
        digest: str,
        size: int,
        parsed: ParsedManifest,
        tag: str | None,
        origin: str,
        now: float,
        from_parent: bool = False,
    ) -> None:
        db.execute("INSERT OR IGNORE INTO repositories (name, created) VALUES (?, ?)", (repository, now))
        db.execute(
            "INSERT OR IGNORE INTO blobs (digest, size, origin, created, last_used) VALUES (?, ?, ?, ?, ?)",
            (digest, size, origin, now, now),
        )
        inserted = db.execute(
            "INSERT OR IGNORE INTO manifests (repository, digest, media_type, size, artifact_type, subject, "
            "annotations, origin, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                repository,
                digest,
                parsed.media_type,
                size,
                parsed.artifact_type,
                parsed.subject,
                json.dumps(parsed.annotations) if parsed.annotations else None,
                origin,
                now,
            ),
        ).rowcount
        changed = False
        if inserted:
            references = [(repository, digest, blob.digest, "blob") for blob in parsed.blobs]
            references += [(repository, digest, child.digest, "manifest") for child in parsed.manifests]
            db.executemany(
                "INSERT OR IGNORE INTO manifest_references (repository, manifest, child, kind) VALUES (?, ?, ?, ?)",
                references,
            )
            db.executemany(
                "UPDATE blobs SET last_used = ? WHERE digest = ?", [(now, blob.digest) for blob in parsed.blobs]
            )
            self._event(db, "ManifestPut", repository, None, digest, parsed.media_type, size, parsed.subject, origin, now)
            changed = True
        if tag is not None:
            row = db.execute("SELECT digest FROM tags WHERE repository = ? AND tag = ?", (repository, tag)).fetchone()
            if row is None or row[0] != digest:
                db.execute(
                    "INSERT INTO tags (repository, tag, digest, updated) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (repository, tag) DO UPDATE SET digest = excluded.digest, updated = excluded.updated",
                    (repository, tag, digest, now),
                )
                self._event(db, "TagSet", repository, tag, digest, parsed.media_type, size, parsed.subject, origin, now)
                changed = True
        if changed and not from_parent:
            self._outbox(db, repository, "PushManifest", tag, digest, now)

    async def delete_manifest(self, repository: str, reference: str, origin: str | None = None,
                              from_parent: bool = False) -> None:
        """By digest: the manifest and its tags go (ManifestDeleted). By tag: only the tag (TagDeleted)."""
        origin = origin or self.origin
        outbox = self._outbox if not from_parent else (lambda *args: None)
        now = self.clock()
        if not is_digest(reference):
            validate_tag(reference, "MANIFEST_UNKNOWN")

        def delete(db: sqlite3.Connection) -> None:
            if is_digest(reference):
                row = db.execute(
                    "SELECT media_type, size, subject FROM manifests WHERE repository = ? AND digest = ?",
                    (repository, reference),
                ).fetchone()
                if row is None:
                    raise OciError("MANIFEST_UNKNOWN", f"manifest {reference} is not in repository {repository}")
                db.execute("DELETE FROM tags WHERE repository = ? AND digest = ?", (repository, reference))
                db.execute("DELETE FROM manifest_references WHERE repository = ? AND manifest = ?", (repository, reference))
                db.execute("DELETE FROM manifests WHERE repository = ? AND digest = ?", (repository, reference))
                self._event(db, "ManifestDeleted", repository, None, reference, row[0], row[1], row[2], origin, now)
                outbox(db, repository, "DeleteManifest", None, reference, now)
            else:
                row = db.execute(
                    "SELECT t.digest, m.media_type, m.size FROM tags t JOIN manifests m "
                    "ON m.repository = t.repository AND m.digest = t.digest WHERE t.repository = ? AND t.tag = ?",
                    (repository, reference),
                ).fetchone()
                if row is None:
                    raise OciError("MANIFEST_UNKNOWN", f"tag {reference} is not in repository {repository}")
                db.execute("DELETE FROM tags WHERE repository = ? AND tag = ?", (repository, reference))
                self._event(db, "TagDeleted", repository, reference, row[0], row[1], row[2], None, origin, now)
                outbox(db, repository, "DeleteTag", reference, row[0], now)

        try:
            await self.metadata.write(delete)
        finally:
            self.after_change()

    async def remove_repositories(self, repositories: list[str]) -> None:
        """Every manifest of these repositories goes, as the parent's deletions do (events, no outbox entries):
        what left a ReadOnly child's scope and its grace period (SPEC 7.2)."""
        for repository in repositories:
            for (digest,) in self.metadata.read("SELECT digest FROM manifests WHERE repository = ?", (repository,)):
                if self.get_manifest(repository, digest) is not None:
                    await self.delete_manifest(repository, digest, from_parent=True)

    # --- events and outbox (written inside the transactions above) ------------------------------

    @staticmethod
    def _event(db, kind, repository, tag, digest, media_type, size, subject, origin, now) -> None:
        db.execute(
            "INSERT INTO events (type, repository, tag, digest, media_type, size, subject, origin, time) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, repository, tag, digest, media_type, size, subject, origin, utc_timestamp(now)),
        )

    def _outbox(self, db, repository, operation, tag, digest, now) -> None:
        if self.record_outbox:
            db.execute(
                "INSERT INTO outbox (repository, operation, tag, digest, created) VALUES (?, ?, ?, ?, ?)",
                (repository, operation, tag, digest, utc_timestamp(now)),
            )

    def events(self, after: int = 0, limit: int = 1000) -> list[dict]:
        rows = self.metadata.read(
            "SELECT seq, type, repository, tag, digest, media_type, size, subject, origin, time FROM events "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        )
        keys = ("seq", "type", "repository", "tag", "digest", "mediaType", "size", "subject", "origin", "time")
        return [{k: v for k, v in zip(keys, row) if v is not None} for row in rows]

    async def finish_outbox_entry(self, entry_id: int) -> None:
        await self.metadata.write(lambda db: db.execute("DELETE FROM outbox WHERE id = ?", (entry_id,)))

    async def park_outbox_entry(self, entry_id: int, error: str) -> None:
        await self.metadata.write(lambda db: db.execute(
            "UPDATE outbox SET state = 'parked', attempts = attempts + 1, last_error = ? WHERE id = ?",
            (error[:2000], entry_id)))

    async def retry_outbox_entry(self, entry_id: int) -> bool:
        return await self.metadata.write(lambda db: db.execute(
            "UPDATE outbox SET state = 'pending', last_error = NULL WHERE id = ? AND state = 'parked'",
            (entry_id,)).rowcount == 1)

    async def drop_outbox_entry(self, entry_id: int) -> bool:
        return await self.metadata.write(lambda db: db.execute("DELETE FROM outbox WHERE id = ?", (entry_id,)).rowcount == 1)

    def undelivered_tag(self, repository: str, tag: str) -> bool:
        """A local write of this tag the parent has not acknowledged yet (its events wait, SPEC 7.3)."""
        return self.metadata.read_one("SELECT 1 FROM outbox WHERE repository = ? AND tag = ? LIMIT 1",
                                      (repository, tag)) is not None

    def outbox(self) -> list[dict]:
        rows = self.metadata.read(
            "SELECT id, repository, operation, tag, digest, state, attempts, last_error, created FROM outbox ORDER BY id"
        )
        keys = ("id", "repository", "operation", "tag", "digest", "state", "attempts", "lastError", "created")
        return [dict(zip(keys, row)) for row in rows]

    # --- listings ---------------------------------------------------------------------------------

    def repository_exists(self, repository: str) -> bool:
        return self.metadata.read_one("SELECT 1 FROM repositories WHERE name = ?", (repository,)) is not None

    def has_manifests(self, repository: str) -> bool:
        return self.metadata.read_one("SELECT 1 FROM manifests WHERE repository = ? LIMIT 1", (repository,)) is not None

    def list_tags(self, repository: str, limit: int | None, last: str | None) -> list[str]:
        sql = "SELECT tag FROM tags WHERE repository = ? AND tag > ? ORDER BY tag"
        parameters: tuple = (repository, last or "")
        if limit is not None:
            sql += " LIMIT ?"
            parameters += (limit,)
        return [row[0] for row in self.metadata.read(sql, parameters)]

    def list_repositories(self, limit: int | None, last: str | None) -> list[str]:
        sql = "SELECT name FROM repositories WHERE name > ? ORDER BY name"
        parameters: tuple = (last or "",)
        if limit is not None:
            sql += " LIMIT ?"
            parameters += (limit,)
        return [row[0] for row in self.metadata.read(sql, parameters)]

    def referrers(self, repository: str, subject: str, artifact_type: str | None) -> list[Referrer]:
        sql = (
            "SELECT digest, media_type, size, artifact_type, annotations FROM manifests "
            "WHERE repository = ? AND subject = ?"
        )
        parameters: tuple = (repository, subject)
        if artifact_type is not None:
            sql += " AND artifact_type = ?"
            parameters += (artifact_type,)
        sql += " ORDER BY created, digest"
        return [
            Referrer(row[0], row[1], row[2], row[3], json.loads(row[4]) if row[4] else None)
            for row in self.metadata.read(sql, parameters)
        ]
