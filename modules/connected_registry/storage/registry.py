"""The registry's storage facade: blobs, uploads, manifests, tags, referrers, events and outbox.

Every change that clients can see (a tag set, a manifest put, a delete) commits in one metadata
transaction together with its events and, on a ReadWrite child, its outbox entry (changes.py).
Reads of manifests and tags are served from a small in-memory cache, dropped on every write.
The metadata store is the `MetadataStore` interface; SQLite (storage/sqlite/, the default, in the data directory)
and PostgreSQL (storage/postgres/, for replicas sharing one database) implement it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from connected_registry.oci.digest import is_digest
from connected_registry.oci.errors import OciError
from connected_registry.oci.manifest import MAX_MANIFEST_BYTES, parse_manifest
from connected_registry.oci.names import validate_tag
from connected_registry.storage.backends import open_blob_store, open_metadata
from connected_registry.storage.blobstore import FILESYSTEM, RemoteBlob, StoredBlob
from connected_registry.storage.changes import ManifestPut, check_references, digest_and_tag, record_delete, record_put
from connected_registry.storage.control import ControlStore, update_control_state
from connected_registry.storage.disk import DIRECTORY_MODE, Disk, StorageError, restrict_modes, storage_error_from_os
from connected_registry.storage.manifest_cache import MANIFEST_CACHE_BYTES, ManifestCache, ManifestRecord
from connected_registry.storage.metadata import MetadataStore, MetadataWrites
from connected_registry.storage.records import ManifestEntry, Referrer, ResumableDownload
from connected_registry.timefmt import Clock, utc_timestamp
from connected_registry.waits import wait_event

_PROBE_BYTES = 1 << 20  # room a recovered volume must have: a little more than a metadata commit needs
@dataclass(frozen=True)
class PutResult:
    digest: str
    subject: str | None


class RegistryStore:
    """Opened for the life of an instance: `async with RegistryStore(data_dir) as store:` closes it at the end."""

    def __init__(
        self,
        data_dir: str,
        *,
        origin: str = "local",
        record_outbox: bool = False,
        disk: Disk | None = None,
        clock: Clock = time.time,
        metadata: str | None = None,
        blob_store: str | None = None,
    ) -> None:
        """`blob_store`: where blob bytes live, `filesystem` (None: the default, in `data_dir`) or
        `azure://<container>[/<prefix>]` (storage/azure/); the metadata stays in `data_dir`."""
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
        self.io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="blob-io")
        self.metadata = open_metadata(data_dir, self.disk, metadata)
        self.blob_store = blob_store or FILESYSTEM
        self.files, self.uploads = open_blob_store(self.blob_store, data_dir, self.disk, self.metadata, self.io, clock)
        # Dropped on every write here; a replica cannot see another's writes, so a shared store keeps none.
        self._manifest_cache = ManifestCache(limit=0 if self.metadata.shared else MANIFEST_CACHE_BYTES)
        # A digest's record never changes, so replicas keep those (by digest, looked up after the metadata said the
        # manifest is there): a manifest GET costs a database round trip, not one to object storage as well.
        self._by_digest = ManifestCache(limit=MANIFEST_CACHE_BYTES if self.metadata.shared else 0)
        self._events_written: asyncio.Event | None = None
        self.closing = False  # set at shutdown: long polls answer at once
        self.control = ControlStore(self.metadata)
        self.coordination = self.metadata.coordination(clock)  # with the other replicas, when the metadata is shared

    async def resumable_session(self, repository: str, digest: str, fresh: bool = False):
        """The persistent session of `digest` arriving from the parent or a bundle: a cut transfer resumes from its
        offset, across restarts too; a new one when `fresh` or none is left."""
        upload_id = None if fresh else self.control.transfer_session(ResumableDownload(digest))
        if upload_id:
            try:
                return self.uploads.get(repository, upload_id)
            except OciError:
                pass
        session = await self.uploads.create(repository)
        await self.control.remember_transfer_session(ResumableDownload(digest), session.id)
        return session

    async def __aenter__(self) -> RegistryStore:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.files.aclose()
        self.close()

    def close(self) -> None:
        self.metadata.close()
        self.io.shutdown(wait=True)

    def check_readable(self) -> None:
        """Raises while the metadata cannot be read (the readiness probe)."""
        self.metadata.check_readable()

    async def check_writable(self) -> None:
        """A small durable write (a file fsynced, a metadata commit); raises StorageError while the volume
        cannot take it. The probe that tells a full disk has recovered."""
        checked = utc_timestamp(self.clock())

        def probe(tx: MetadataWrites) -> None:
            self.files.write_probe(_PROBE_BYTES)
            update_control_state(tx, disk_checked=checked)

        await self.metadata.write(probe)

    # --- blobs ----------------------------------------------------------------------------------

    def blob_size(self, repository: str, digest: str) -> int | None:
        """Size of a blob visible in `repository`, or None."""
        return self.metadata.blob_size(repository, digest)

    def blob_chunks(self, digest: str, start: int, end: int) -> AsyncIterator[bytes]:
        """The bytes [start, end) of a stored blob, from either backend (what the outbox sends up)."""
        return self.files.chunks(digest, start, end)

    def stored_blob(self, digest: str, size: int) -> StoredBlob | RemoteBlob:
        return self.files.stored(digest, size)

    async def mount_blob(self, repository: str, source: str, digest: str) -> bool:
        """Link a blob of `source` into `repository`; False when `source` does not have it."""
        if self.blob_size(source, digest) is None:
            return False
        now = self.clock()

        def link(tx: MetadataWrites) -> bool:
            if not tx.links_blob(source, digest):
                return False
            tx.link_blob(repository, digest, now)
            tx.touch_blobs([digest], now)
            return True

        return await self.metadata.write(link)

    async def link_blob(self, repository: str, digest: str) -> bool:
        """Make a blob already stored (in any repository) visible in `repository`: no transfer needed. Only for a
        blob known to belong there (see `referenced_blob`, or the parent said so): never on a client's word."""
        now = self.clock()

        def link(tx: MetadataWrites) -> bool:
            if not tx.holds_blob(digest) or not self.files.exists(digest):
                return False
            tx.link_blob(repository, digest, now)
            tx.touch_blobs([digest], now)
            return True

        return await self.metadata.write(link)

    def referenced_blob(self, repository: str, digest: str) -> bool:
        """Whether a manifest of `repository` stored here references the blob: then it belongs there (a pushed
        manifest's blobs were checked in `repository`, a synced or fetched one came from the parent's)."""
        return self.metadata.references_blob(repository, digest)

    def holds_blob(self, digest: str) -> bool:
        """Whether the blob is stored here, in any repository."""
        return self.metadata.holds_blob(digest)

    def repositories_with_blob(self, digest: str) -> list[str]:
        return self.metadata.repositories_with_blob(digest)

    async def delete_blob(self, repository: str, digest: str) -> None:
        def unlink(tx: MetadataWrites) -> None:
            if not tx.unlink_blob(repository, digest):
                raise OciError("BLOB_UNKNOWN", f"blob {digest} is not in repository {repository}")

        await self.metadata.write(unlink)

    async def remove_blob_file(self, digest: str) -> None:
        """After its rows went: remove a blob's file, in turn with the metadata writes (never while a commit
        installs the same digest again), unless a commit since (here or on another replica: a push of the same
        bytes) installed it again."""
        await self.metadata.serialized(lambda reads: None if reads.holds_blob(digest) else self.files.remove(digest))

    # --- manifests --------------------------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str) -> ManifestRecord | None:
        record, entry = self._cached_or_entry(repository, reference)
        if entry is None:
            return record
        return self._remembered((repository, reference), entry, self.files.read_small(entry.digest,
                                MAX_MANIFEST_BYTES + 1), self._manifest_cache.generation)

    async def read_manifest(self, repository: str, reference: str) -> ManifestRecord | None:
        """`get_manifest` for the read routes: a body the cache lacks is read off the event loop when it is in
        object storage (a network round trip); from the filesystem it is read at once, as before."""
        if self.blob_store == FILESYSTEM:
            return self.get_manifest(repository, reference)
        record, entry = self._cached_or_entry(repository, reference)
        if entry is None:
            return record
        generation = self._manifest_cache.generation
        known = self._by_digest.get(("", entry.digest))  # its body, the same in every repository
        if known is not None:
            return self._remembered((repository, reference), entry, known.body, generation)
        body = await asyncio.get_running_loop().run_in_executor(self.io, self.files.read_small, entry.digest,
                                                                MAX_MANIFEST_BYTES + 1)
        record = self._remembered((repository, reference), entry, body, generation)
        if record is not None:
            self._by_digest.remember(("", entry.digest), record)
        return record

    def _cached_or_entry(self, repository: str, reference: str) -> tuple[ManifestRecord | None, ManifestEntry | None]:
        """The cached record, or else the manifest's entry whose body is still to be read (neither: not here)."""
        record = self._manifest_cache.get((repository, reference))
        if record is not None:
            return record, None
        if is_digest(reference):
            return None, self.metadata.manifest_by_digest(repository, reference)
        return None, self.metadata.manifest_by_tag(repository, reference)

    def _remembered(self, key: tuple[str, str], entry: ManifestEntry, body: bytes | None,
                    generation: int) -> ManifestRecord | None:
        """The record, cached unless a write came between its lookup and now (the tag may name another one)."""
        if body is None:
            return None
        record = ManifestRecord(entry.digest, entry.media_type, entry.size, body, entry.subject)
        if generation == self._manifest_cache.generation:
            self._manifest_cache.remember(key, record)
        return record

    def manifest_digests(self, repository: str) -> list[str]:
        """Every manifest stored in `repository`, tagged or not."""
        return self.metadata.manifest_digests(repository)

    def after_change(self) -> None:
        """After any write that readers can see: drop cached manifests, wake the event feed."""
        self._manifest_cache.clear()
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
        if self.metadata.has_events_after(after):
            return
        await wait_event(signal, timeout)

    async def put_manifest(
        self, repository: str, reference: str, body: bytes, content_type: str | None, origin: str | None = None,
        from_parent: bool = False, on_demand: bool = False, left_out: frozenset[str] | None = None,
    ) -> PutResult:
        """Store a manifest (and tag). `from_parent`: written by the sync, so nothing goes to the outbox.
        `on_demand`: fetched for a client's miss (implies from_parent); its blobs may still be at the parent,
        the client asks for them next. Anything else makes the manifest's content permanent. `left_out`: the
        children of an index the sync did not copy by design (`platforms`); without it, those the same index
        here left out stay absent by design (a new tag for it)."""
        if len(body) > MAX_MANIFEST_BYTES:
            raise OciError("MANIFEST_TOO_LARGE", "manifest is larger than the 4 MiB limit")
        digest, tag = digest_and_tag(reference, body)
        put = ManifestPut(repository, digest, tag, parse_manifest(body, content_type), len(body), origin or self.origin,
                          self.clock(), on_demand, outbox=self.record_outbox and not (from_parent or on_demand),
                          left_out=left_out)

        def write(tx: MetadataWrites) -> None:
            if not on_demand:
                absent = left_out if left_out is not None else frozenset(tx.left_out_children(repository, digest))
                check_references(tx, repository, put.parsed, absent)
            created = not self.files.exists(digest)
            self.files.write_small(body, digest)
            try:
                record_put(tx, put)
            except BaseException:
                if created:  # no row will name it: leave nothing behind
                    self.files.remove(digest)
                raise

        try:
            await self.metadata.write(write)
        finally:
            self.after_change()
        return PutResult(digest, put.parsed.subject)

    def incomplete(self, repository: str, digest: str) -> bool:
        """A manifest stored on demand whose blobs or child manifests (at any depth) are not all here yet."""
        return self.metadata.incomplete(repository, digest)

    def left_out_by(self, repository: str, digest: str) -> str | None:
        """An index here that leaves this manifest out by design (the `platforms` setting), if one does."""
        return self.metadata.left_out_by(repository, digest)

    def left_out_children(self, repository: str, digest: str) -> set[str]:
        return self.metadata.left_out_children(repository, digest)

    async def delete_manifest(self, repository: str, reference: str, origin: str | None = None,
                              from_parent: bool = False) -> None:
        """By digest: the manifest and its tags go (ManifestDeleted). By tag: only the tag (TagDeleted)."""
        origin = origin or self.origin
        now = self.clock()
        if not is_digest(reference):
            validate_tag(reference, "MANIFEST_UNKNOWN")
        outbox = self.record_outbox and not from_parent
        try:
            await self.metadata.write(lambda tx: record_delete(tx, repository, reference, origin, now, outbox))
        finally:
            self.after_change()

    async def remove_repositories(self, repositories: list[str]) -> None:
        """Every manifest of these repositories goes, as the parent's deletions do (events, no outbox entries):
        what left a ReadOnly child's scope and its grace period (SPEC 7.2)."""
        for repository in repositories:
            for digest in self.manifest_digests(repository):
                if self.get_manifest(repository, digest) is not None:
                    await self.delete_manifest(repository, digest, from_parent=True)

    # --- events and outbox (written with the changes, storage/changes.py) ------------------------

    def events(self, after: int = 0, limit: int = 1000) -> list[dict]:
        return self.metadata.events(after, limit)

    async def finish_outbox_entry(self, entry_id: int) -> None:
        await self.metadata.write(lambda tx: tx.remove_outbox_entry(entry_id))

    async def park_outbox_entry(self, entry_id: int, error: str) -> None:
        await self.metadata.write(lambda tx: tx.park_outbox_entry(entry_id, error))

    async def retry_outbox_entry(self, entry_id: int) -> bool:
        return await self.metadata.write(lambda tx: tx.retry_outbox_entry(entry_id))

    async def drop_outbox_entry(self, entry_id: int) -> bool:
        return await self.metadata.write(lambda tx: tx.remove_outbox_entry(entry_id))

    def undelivered_tag(self, repository: str, tag: str) -> bool:
        """A local write of this tag the parent has not acknowledged yet (its events wait, SPEC 7.3)."""
        return self.metadata.undelivered_tag(repository, tag)

    def outbox(self) -> list[dict]:
        return self.metadata.outbox()

    # --- listings ---------------------------------------------------------------------------------

    def repository_exists(self, repository: str) -> bool:
        return self.metadata.repository_exists(repository)

    def has_manifests(self, repository: str) -> bool:
        return bool(self.metadata.manifest_digests(repository))

    def list_tags(self, repository: str, limit: int | None, last: str | None) -> list[str]:
        return self.metadata.list_tags(repository, limit, last)

    def list_repositories(self, limit: int | None, last: str | None) -> list[str]:
        return self.metadata.list_repositories(limit, last)

    def referrers(self, repository: str, subject: str, artifact_type: str | None) -> list[Referrer]:
        return self.metadata.referrers(repository, subject, artifact_type)

