"""Upload sessions: bytes streamed to disk and hashed as they arrive, resumable across restarts.

A session is a file `uploads/<id>` and a row in `uploads`. Its offset is the file's size, so after a
crash the status a client reads is exactly what is on disk. The running hash lives in memory; after a
restart it is rebuilt once from the file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from connected_registry.oci.digest import parse_digest
from connected_registry.oci.errors import OciError
from connected_registry.storage.blobs import BlobFiles
from connected_registry.storage.blobstore import ByteStream
from connected_registry.storage.disk import StorageError, storage_error_from_os
from connected_registry.storage.metadata import MetadataStore, MetadataWrites
from connected_registry.timefmt import Clock

BLOCK = 1 << 20  # bytes handed to the writer thread at a time
FIRST_BLOCK = 64 << 10  # the first write comes sooner: a client streaming a fill gets its first byte early
_HASH_READ = 4 << 20
WRITEBACK_STEP = 8 << 20
_WRITEV_PARTS = 256  # chunks written with one writev; more than that are joined first
BODY_IDLE_SECONDS = 60.0  # a body that sends nothing for this long ends the request (and frees its session)
ABANDONED_SECONDS = 24 * 3600  # a session nobody wrote to for this long is abandoned: garbage collection removes it
EMPTY_ABANDONED_SECONDS = 3600  # an empty one after an hour already: starting again costs its client nothing
# Open client sessions at once: docker and containerd push a few layers of an image in parallel, so real clients stay
# far below these; a flood of POSTs does not fill the volume with files and rows.
SESSIONS_PER_TOKEN = 64
SESSIONS_PER_REPOSITORY = 256


@dataclass
class UploadSession:
    id: str
    repository: str
    path: str
    offset: int
    hasher: "hashlib._Hash | None"  # None: rebuild from the file before use
    persistent: bool
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def abandoned(stat: os.stat_result, now: float, grace: float = ABANDONED_SECONDS) -> bool:
    """A session's file nobody wrote to for `grace`, or, empty, for an hour."""
    idle = now - stat.st_mtime
    return idle > grace or (stat.st_size == 0 and idle > EMPTY_ABANDONED_SECONDS)


def upload_range_error(session: UploadSession, message: str) -> OciError:
    return OciError(
        "UPLOAD_RANGE_INVALID",
        message,
        headers={"Range": f"0-{max(session.offset - 1, 0)}", "Docker-Upload-UUID": session.id},
    )


class SessionRows:
    """What every backend's upload sessions share: their rows, the caps on open sessions, and the commit that makes
    a verified blob visible."""

    def __init__(self, metadata: MetadataStore, clock: Clock) -> None:
        self.metadata = metadata
        self.clock = clock  # the store's: when a session started, when its blob was last used
        self.body_idle_seconds = BODY_IDLE_SECONDS
        self.sessions_per_token = SESSIONS_PER_TOKEN
        self.sessions_per_repository = SESSIONS_PER_REPOSITORY
        self._sessions: dict = {}  # the sessions this process has in hand, by id

    def get(self, repository: str, upload_id: str):
        """A session this instance knows of (in hand, or by its row); `BLOB_UPLOAD_UNKNOWN` otherwise."""
        session = self._sessions.get(upload_id)
        if session is None:
            owning_repository = self.metadata.upload_repository(upload_id)
            session = None if owning_repository is None else self._revive(upload_id, owning_repository)
            if session is None:
                raise OciError("BLOB_UPLOAD_UNKNOWN", f"upload {upload_id} is unknown: start a new upload with POST")
            self._sessions[upload_id] = session
        return self._belonging(session, repository)

    @staticmethod
    def _belonging(session, repository: str):
        if session.repository != repository:
            raise OciError("BLOB_UPLOAD_UNKNOWN", f"upload {session.id} belongs to another repository")
        return session

    def _revive(self, upload_id: str, repository: str):
        """A session with a row that this process does not have in hand (after a restart), or None when its bytes
        are gone."""
        raise NotImplementedError

    async def add_row(self, upload_id: str, repository: str, owner: str | None) -> None:
        now = self.clock()

        def insert(tx: MetadataWrites) -> None:
            if owner is not None:
                self._admit(tx, repository, owner, now)
            tx.add_upload(upload_id, repository, now, owner)

        await self.metadata.write(insert)

    def _admit(self, tx: MetadataWrites, repository: str, owner: str, now: float) -> None:
        """Inside the write: refuse a client's session beyond its token's or its repository's cap. Abandoned
        sessions in the way are removed first, so a client that left some behind is not held up until the next
        garbage collection."""
        caps = ((tx.client_uploads_of, owner, self.sessions_per_token, f"token {owner!r}", "token"),
                (tx.client_uploads_in, repository, self.sessions_per_repository, f"repository {repository}",
                 "repository"))
        for open_sessions, value, cap, holder, per in caps:
            open_ids = open_sessions(value)
            if len(open_ids) >= cap:
                open_ids = [upload_id for upload_id in open_ids if not self.remove_if_abandoned(tx, upload_id, now)]
            if len(open_ids) >= cap:
                raise OciError("TOOMANYREQUESTS", f"{holder} has {len(open_ids)} open upload sessions and the cap is "
                               f"{cap} per {per}: finish or cancel (DELETE) some before starting more (one left empty "
                               "for an hour, or untouched for a day, is removed by itself)")

    def remove_if_abandoned(self, tx: MetadataWrites, name: str, now: float,
                            grace: float = ABANDONED_SECONDS) -> bool:
        raise NotImplementedError

    def open_sessions(self) -> int:
        """Upload sessions open now (clients' and the sync's): the status document's count."""
        return self.metadata.upload_count()

    @staticmethod
    def record_blob(tx: MetadataWrites, session_id: str, repository: str, digest: str, size: int, origin: str,
                    now: float, on_demand: bool) -> None:
        """Inside the commit: the verified blob becomes visible in `repository`, and its session goes."""
        new_blob = tx.add_blob(digest, size, origin, now)
        tx.touch_blobs([digest], now)
        tx.link_blob(repository, digest, now)
        tx.remove_upload(session_id)
        if on_demand and new_blob:  # content already here stays what it was (maybe permanent)
            tx.list_on_demand(digest, size, now)
        elif not on_demand:
            tx.unlist_on_demand([digest])


def digest_mismatch(digest: str, algorithm: str, actual: str) -> OciError:
    return OciError(
        "DIGEST_INVALID",
        f"uploaded content has digest {algorithm}:{actual}, not {digest}: the upload was discarded",
        detail={"expected": digest, "actual": f"{algorithm}:{actual}"},
    )


class Uploads(SessionRows):
    """The filesystem backend's sessions: a file each in the uploads folder."""

    def __init__(self, files: BlobFiles, metadata: MetadataStore, io_executor: ThreadPoolExecutor,
                 clock: Clock) -> None:
        super().__init__(metadata, clock)
        self.files = files
        self.io = io_executor

    # --- sessions ------------------------------------------------------------------------------

    async def create(self, repository: str, persistent: bool = True, owner: str | None = None) -> UploadSession:
        """A new session. `owner`: the token of a client's session, which counts against the caps (the sync's own
        sessions do not)."""
        upload_id = str(uuid.uuid4())
        path = os.path.join(self.files.incoming, upload_id)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as error:
            raise storage_error_from_os(error, "starting an upload") from error
        session = UploadSession(upload_id, repository, path, 0, hashlib.sha256(), persistent)
        if persistent:
            try:
                await self.add_row(upload_id, repository, owner)
            except BaseException:
                os.unlink(path)
                raise
        self._sessions[upload_id] = session
        return session

    def remove_if_abandoned(self, tx: MetadataWrites, name: str, now: float,
                            grace: float = ABANDONED_SECONDS) -> bool:
        """Inside a write: remove an abandoned file of the uploads folder (a session's, with its row, or one
        a crash left) and say so. A session that a request is writing to is never abandoned."""
        path = os.path.join(self.files.incoming, name)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            stat = None  # a row whose file is gone
        session = self._sessions.get(name)
        if (stat is not None and not abandoned(stat, now, grace)) or (session is not None and session.lock.locked()):
            return False
        self._sessions.pop(name, None)
        tx.remove_upload(name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return True

    def leftover_names(self) -> list[str]:
        return [entry.name for entry in os.scandir(self.files.incoming)]

    async def find(self, repository: str, upload_id: str) -> UploadSession:
        return self.get(repository, upload_id)  # one instance per volume: what it knows is all there is

    def _revive(self, upload_id: str, repository: str) -> UploadSession | None:
        path = os.path.join(self.files.incoming, upload_id)
        if not os.path.exists(path):
            return None
        return UploadSession(upload_id, repository, path, os.path.getsize(path), None, True)

    async def cancel(self, session: UploadSession) -> None:
        self._sessions.pop(session.id, None)
        if session.persistent:
            await self.metadata.write(lambda tx: tx.remove_upload(session.id))
        try:
            os.unlink(session.path)
        except FileNotFoundError:
            pass

    # --- receiving bytes ------------------------------------------------------------------------

    async def append(self, session: UploadSession, stream: ByteStream, start: int | None,
                     progress: Callable[[int], None] | None = None) -> int:
        """Append a request body to the session; `start` (from Content-Range) must be the current offset.
        `progress` hears the session's offset each time a block is on disk (readers of a blob being filled)."""
        async with session.lock:
            if start is not None and start != session.offset:
                raise upload_range_error(
                    session, f"chunk starts at {start} but the upload has {session.offset} bytes: resume from there"
                )
            return await self._receive(session, stream, progress)

    async def _receive(self, session: UploadSession, stream: ByteStream,
                       progress: Callable[[int], None] | None = None) -> int:
        loop = asyncio.get_running_loop()
        await self._ensure_hasher(session)
        try:
            fd = os.open(session.path, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            raise OciError("BLOB_UPLOAD_UNKNOWN", f"upload {session.id} is gone: start a new upload") from None
        pending: asyncio.Future | None = None
        parts: list[bytes] = []
        buffered = 0
        received = 0
        idle = asyncio.timeout(self.body_idle_seconds)
        try:
            async with idle:
                while True:
                    chunk = await stream.readany()
                    idle.reschedule(loop.time() + self.body_idle_seconds)
                    if chunk:
                        parts.append(chunk)
                        buffered += len(chunk)
                    if buffered >= (BLOCK if received else FIRST_BLOCK) or (not chunk and buffered):
                        block, size = parts, buffered
                        parts, buffered = [], 0
                        if pending is not None:
                            await pending
                        pending = loop.run_in_executor(self.io, self._write_block, session, fd, block, size)
                        if progress is not None:  # as soon as the block is on disk, not when the next one is ready
                            pending.add_done_callback(lambda done: done.exception() or progress(session.offset))
                        received += size
                    if not chunk:
                        break
            if pending is not None:
                await pending
                pending = None
        except TimeoutError:
            await self._settle(session, fd, pending, parts, buffered)
            if not idle.expired():  # not ours (e.g. the parent's read timeout during a sync)
                raise
            raise OciError("BLOB_UPLOAD_INVALID", f"the upload sent nothing for {self.body_idle_seconds:g} s and was "
                           f"stopped at {session.offset} bytes: check its status and resume from there") from None
        except BaseException:
            await self._settle(session, fd, pending, parts, buffered)
            raise
        finally:
            os.close(fd)
        return received

    async def _settle(self, session: UploadSession, fd: int, pending: asyncio.Future | None, parts: list[bytes],
                      size: int) -> None:
        """After a broken receive: let the last block land and keep the bytes that did arrive after it, so a
        resume goes on from the last byte received (a cut link costs nothing twice). The offset and the hash
        follow the file; when a write failed the hash is rebuilt from the file next time."""
        intact = True
        if pending is not None:
            try:
                await asyncio.shield(pending)
            except Exception:
                intact = False
        if intact and parts:
            try:  # at most a block, and on the loop: nothing else may write to `fd` once we return
                self._write_block(session, fd, parts, size)
            except StorageError:
                intact = False
        if not intact:
            session.hasher = None
            session.offset = os.fstat(fd).st_size

    def _write_block(self, session: UploadSession, fd: int, parts: list[bytes], size: int) -> None:
        """Write the chunks as they came off the socket, with no copy to join them (a block is usually a
        handful of large reads; a trickle of tiny ones is joined, as writev takes at most IOV_MAX)."""
        if len(parts) > _WRITEV_PARTS:
            parts = [b"".join(parts)]
        try:
            written = os.writev(fd, parts)
            if written < size:  # a short write: the rest in order
                rest = memoryview(b"".join(parts))[written:]
                while rest:
                    rest = rest[os.write(fd, rest):]
        except OSError as error:
            raise storage_error_from_os(error, f"writing upload {session.id}") from error
        for part in parts:
            session.hasher.update(part)
        previous = session.offset
        session.offset += size
        if previous // WRITEBACK_STEP != session.offset // WRITEBACK_STEP:
            # Start writing the previous step to disk now, so the final fsync has little left to do.
            end = session.offset // WRITEBACK_STEP * WRITEBACK_STEP
            self.files.disk.start_writeback(fd, max(end - WRITEBACK_STEP, 0), WRITEBACK_STEP)

    async def _ensure_hasher(self, session: UploadSession) -> None:
        if session.hasher is None:
            session.hasher, session.offset = await asyncio.get_running_loop().run_in_executor(
                self.io, _hash_file, session.path, "sha256"
            )

    # --- finishing --------------------------------------------------------------------------------

    async def complete(self, session: UploadSession, stream: ByteStream, digest: str, origin: str,
                       on_demand: bool = False, verified: Callable[[], None] | None = None) -> int:
        """Receive the last bytes, verify the digest, make the blob durable and visible. Returns its size.
        `on_demand`: filled for a client's miss, so it counts against cache.maxBytes until something
        synced or pushed references it; any other completion makes the blob permanent. `verified` hears that
        the digest matched, before the data is made durable (readers of a fill may have the last bytes then)."""
        algorithm, hex_part = parse_digest(digest)
        async with session.lock:
            await self._receive(session, stream)
            await self._ensure_hasher(session)
            loop = asyncio.get_running_loop()
            if algorithm == "sha256":
                actual = session.hasher.hexdigest()
            else:  # rare: the running hash is sha256, so other algorithms take one pass over the file
                actual = (await loop.run_in_executor(self.io, _hash_file, session.path, algorithm))[0].hexdigest()
            if actual != hex_part:
                await self.cancel(session)
                raise digest_mismatch(digest, algorithm, actual)
            now = self.clock()  # when the content was last used: readers of a fill may have it from here on
            if verified is not None:  # the bytes are right; making them durable and visible follows
                verified()
            size = session.offset
            already_stored = self.files.exists(digest)
            if not already_stored:
                await loop.run_in_executor(self.io, self.files.sync_data, session.path)
            self._sessions.pop(session.id, None)

            def commit(tx: MetadataWrites) -> None:
                self.files.install(session.path, digest, data_synced=not already_stored)
                self.record_blob(tx, session.id, session.repository, digest, size, origin, now, on_demand)

            await self.metadata.write(commit)
            return size


def _hash_file(path: str, algorithm: str) -> tuple["hashlib._Hash", int]:
    hasher = hashlib.new(algorithm)
    size = 0
    try:
        with open(path, "rb", buffering=0) as file:
            while block := file.read(_HASH_READ):
                hasher.update(block)
                size += len(block)
    except FileNotFoundError:
        raise OciError("BLOB_UPLOAD_UNKNOWN", "the upload is gone: start a new upload") from None
    return hasher, size


__all__ = ["ByteStream", "SessionRows", "StorageError", "UploadSession", "Uploads", "digest_mismatch", "upload_range_error"]
