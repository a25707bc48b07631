"""Upload sessions as staged blocks of one block blob, `<prefix>uploads/<id>`, so any replica can continue one.

Each PATCH stages its bytes as blocks (64 KiB first, then 8 MiB; the next one read while one is staged) and
commits each to the session blob's block list, so the bytes received are durable and the offset is what Azure
holds: any replica reads it (the committed block list) and goes on from there, and a request cut off keeps what it
sent. The PUT verifies the digest, then commits the blob under its digest.

The digest: a hash cannot move between processes (hashlib has no way to save its state), so each replica keeps the
running sha256 of the bytes it received itself while they arrive; when the session's bytes all went through it (one
replica, or one request: the usual case), the PUT has the digest at once. Otherwise (chunks on several replicas,
sha512) the PUT hashes the session blob once by streaming it back. Only then, the verified bytes are copied server
side to `blobs/<algorithm>/<hex>` and the metadata commit makes them visible; the session blob goes after that.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobBlock

from connected_registry.oci.digest import parse_digest
from connected_registry.oci.errors import OciError
from connected_registry.storage.azure.blobs import AzureBlobs, storage_errors
from connected_registry.storage.blobstore import ByteStream
from connected_registry.storage.metadata import MetadataStore, MetadataWrites
from connected_registry.storage.uploads import (ABANDONED_SECONDS, EMPTY_ABANDONED_SECONDS, FIRST_BLOCK, SessionRows,
                                                digest_mismatch, upload_range_error)
from connected_registry.timefmt import Clock

BLOCK_BYTES = 8 << 20  # a request per block and a commit after it: larger blocks, fewer round trips
_REPOSITORY = "repository"  # the session blob's metadata: which repository it belongs to
_COMMIT_ATTEMPTS = 3  # garbage collection removing a stray copy between our copy and commit: copy again


@dataclass
class StagedUpload:
    id: str
    repository: str
    offset: int
    hasher: "hashlib._Hash | None"  # the sha256 of exactly [0, offset), or None: rehash at the end
    blocks: list[str] | None  # the committed block ids; None: read them from the container before use
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    path: None = None  # no local file: a fill's readers read its spool (sync/fills.py)


def _block_id(offset: int) -> str:
    return base64.b64encode(b"%020d" % offset).decode()


class AzureUploads(SessionRows):
    def __init__(self, blobs: AzureBlobs, metadata: MetadataStore, io_executor: ThreadPoolExecutor,
                 clock: Clock) -> None:
        super().__init__(metadata, clock)
        self.blobs = blobs
        self.io = io_executor

    def _client(self, upload_id: str):
        return self.blobs.aio_container.get_blob_client(self.blobs.upload_name(upload_id))

    # --- sessions ------------------------------------------------------------------------------

    async def create(self, repository: str, persistent: bool = True, owner: str | None = None) -> StagedUpload:
        """`persistent` is moot here: every session is in the container, so any replica can go on with it."""
        upload_id = str(uuid.uuid4())
        if persistent:
            await self.add_row(upload_id, repository, owner)
        with storage_errors(self.blobs.location, "starting an upload"):
            await self._client(upload_id).commit_block_list([], metadata={_REPOSITORY: repository})
        session = StagedUpload(upload_id, repository, 0, hashlib.sha256(), [])
        self._sessions[upload_id] = session
        return session

    def _revive(self, upload_id: str, repository: str) -> StagedUpload:
        return StagedUpload(upload_id, repository, 0, None, None)  # read from the container before use

    async def find(self, repository: str, upload_id: str) -> StagedUpload:
        """The session as the container holds it now: started or continued by another replica too."""
        session = self._sessions.get(upload_id)
        if session is None and self.metadata.upload_repository(upload_id) is None:
            session = await self._adopt(upload_id)
        session = self._belonging(session, repository) if session else self.get(repository, upload_id)
        if not session.lock.locked():  # else a request here is writing it: what this process knows is newest
            await self._refresh(session)
        return session

    async def _adopt(self, upload_id: str) -> StagedUpload:
        """A session another replica started: its repository is in its blob's metadata."""
        with storage_errors(self.blobs.location, f"reading upload {upload_id}"):
            try:
                properties = await self._client(upload_id).get_blob_properties()
            except ResourceNotFoundError:
                raise OciError("BLOB_UPLOAD_UNKNOWN", f"upload {upload_id} is unknown: start a new upload "
                               "with POST") from None
        repository = properties.metadata.get(_REPOSITORY, "")
        await self.metadata.write(lambda tx: tx.add_upload(upload_id, repository, self.clock(), None))
        session = StagedUpload(upload_id, repository, 0, None, None)
        self._sessions[upload_id] = session
        return session

    async def _refresh(self, session: StagedUpload) -> None:
        """The committed blocks and offset from the container; the running hash holds only if they did not move."""
        with storage_errors(self.blobs.location, f"reading upload {session.id}"):
            try:
                committed, _ = await self._client(session.id).get_block_list("committed")
            except ResourceNotFoundError:
                self._sessions.pop(session.id, None)
                raise OciError("BLOB_UPLOAD_UNKNOWN", f"upload {session.id} is gone: start a new upload") from None
        offset = sum(block.size for block in committed)
        if offset != session.offset or session.blocks is None:
            session.hasher = hashlib.sha256() if offset == 0 else None
        session.offset, session.blocks = offset, [block.id for block in committed]

    async def cancel(self, session: StagedUpload) -> None:
        self._sessions.pop(session.id, None)
        await self.metadata.write(lambda tx: tx.remove_upload(session.id))
        await asyncio.get_running_loop().run_in_executor(self.io, self.blobs.remove_name,
                                                         self.blobs.upload_name(session.id))

    def leftover_names(self) -> list[str]:
        start = self.blobs.upload_name("")
        with storage_errors(self.blobs.location, "listing uploads"):
            return [item.name.removeprefix(start)
                    for item in self.blobs.container.list_blobs(name_starts_with=start)]

    def remove_if_abandoned(self, tx: MetadataWrites, name: str, now: float,
                            grace: float = ABANDONED_SECONDS) -> bool:
        """Inside a write: a session nobody wrote to for `grace` (empty: an hour), with its row, goes."""
        session = self._sessions.get(name)
        if session is not None and session.lock.locked():
            return False
        blob_name = self.blobs.upload_name(name)
        with storage_errors(self.blobs.location, f"reading upload {name}"):
            try:
                properties = self.blobs.container.get_blob_client(blob_name).get_blob_properties()
            except ResourceNotFoundError:
                properties = None  # a row whose blob is gone
        if properties is not None:
            idle = now - properties.last_modified.timestamp()
            if idle <= grace and not (properties.size == 0 and idle > EMPTY_ABANDONED_SECONDS):
                return False
        self._sessions.pop(name, None)
        tx.remove_upload(name)
        self.blobs.remove_name(blob_name)
        return True

    # --- receiving bytes ------------------------------------------------------------------------

    async def append(self, session: StagedUpload, stream: ByteStream, start: int | None,
                     progress: Callable[[int], None] | None = None) -> int:
        async with session.lock:
            if session.blocks is None:
                await self._refresh(session)
            if start is not None and start != session.offset:
                raise upload_range_error(
                    session, f"chunk starts at {start} but the upload has {session.offset} bytes: resume from there")
            received = await self._receive(session, stream)
            if progress is not None:
                progress(session.offset)
            return received

    async def _receive(self, session: StagedUpload, stream: ByteStream) -> int:
        """Stage the body as blocks, each committed once staged (while the next one arrives): the offset moves with
        each commit, so a status, another replica and a resume after a cut all see the bytes that arrived."""
        loop = asyncio.get_running_loop()
        buffer = bytearray()
        pending: asyncio.Task | None = None
        received = 0
        idle = asyncio.timeout(self.body_idle_seconds)
        try:
            async with idle:
                while True:
                    chunk = await stream.readany()
                    idle.reschedule(loop.time() + self.body_idle_seconds)
                    buffer += chunk
                    if len(buffer) >= (BLOCK_BYTES if received else FIRST_BLOCK) or (not chunk and buffer):
                        if pending is not None:
                            await pending
                        pending = asyncio.create_task(self._append_block(session, bytes(buffer)))
                        received += len(buffer)
                        buffer.clear()
                    if not chunk:
                        break
                if pending is not None:
                    await pending
        except BaseException as error:
            await asyncio.shield(self._keep_what_arrived(session, pending, bytes(buffer)))
            if isinstance(error, TimeoutError) and idle.expired():
                raise OciError("BLOB_UPLOAD_INVALID", f"the upload sent nothing for {self.body_idle_seconds:g} s and "
                               f"was stopped at {session.offset} bytes: check its status and resume from there") from None
            raise
        return received

    async def _append_block(self, session: StagedUpload, data: bytes) -> None:
        """Stage one block at the session's offset and commit it after the blocks before it. Its id is its offset,
        so a block sent again after a cut replaces the one it repeats."""
        block_id = _block_id(session.offset)
        if session.hasher is not None:  # on a second thread (hashlib lets go of the GIL), as the filesystem does
            await asyncio.get_running_loop().run_in_executor(self.io, session.hasher.update, data)
        client = self._client(session.id)
        with storage_errors(self.blobs.location, f"writing upload {session.id}"):
            try:
                await client.stage_block(block_id, data, length=len(data))
                blocks = [BlobBlock(committed) for committed in [*session.blocks, block_id]]
                await client.commit_block_list(blocks, metadata={_REPOSITORY: session.repository})
            except BaseException:
                session.hasher = None  # it may hold bytes that were not committed: the PUT hashes from the container
                session.blocks = None  # read again from the container before the next use
                raise
        session.blocks.append(block_id)
        session.offset += len(data)

    async def _keep_what_arrived(self, session: StagedUpload, pending: asyncio.Task | None, rest: bytes) -> None:
        """After a broken receive: let the last block land and keep the bytes read since, so a resume goes on from
        the last byte received (a cut link costs nothing twice). Whatever fails leaves the session at a commit."""
        try:
            if pending is not None:
                await pending
            if rest:
                await self._append_block(session, rest)
        except Exception:
            pass  # _append_block left the session to be read again from the container

    # --- finishing --------------------------------------------------------------------------------

    async def complete(self, session: StagedUpload, stream: ByteStream, digest: str, origin: str,
                       on_demand: bool = False, verified: Callable[[], None] | None = None) -> int:
        """Receive the last bytes, verify the digest, copy the blob to its name, make it visible. Returns its size."""
        algorithm, hex_part = parse_digest(digest)
        async with session.lock:
            if session.blocks is None:
                await self._refresh(session)
            await self._receive(session, stream)
            actual = await self._digest(session, algorithm)
            if actual != hex_part:
                await self.cancel(session)
                raise digest_mismatch(digest, algorithm, actual)
            now = self.clock()
            if verified is not None:
                verified()
            size = session.offset
            self._sessions.pop(session.id, None)
            for _ in range(_COMMIT_ATTEMPTS):
                if not await self._stored(digest):
                    await self.blobs.copy_in(session.id, digest)
                if await self.metadata.write(lambda tx: self._record(tx, session, digest, size, origin, now,
                                                                     on_demand)):
                    break
            else:
                raise OciError("BLOB_UPLOAD_INVALID", f"{digest} was removed as often as it was stored: finish the "
                               "upload again (PUT)")
            await asyncio.get_running_loop().run_in_executor(self.io, self.blobs.remove_name,
                                                             self.blobs.upload_name(session.id))
            return size

    async def _stored(self, digest: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(self.io, self.blobs.exists, digest)

    def _record(self, tx: MetadataWrites, session: StagedUpload, digest: str, size: int, origin: str, now: float,
                on_demand: bool) -> bool:
        """Inside the commit: visible only if the copy is there now (garbage collection removes strays in turn with
        the writes, so it cannot take it between this check and the commit)."""
        if not self.blobs.exists(digest):
            return False
        self.record_blob(tx, session.id, session.repository, digest, size, origin, now, on_demand)
        return True

    async def _digest(self, session: StagedUpload, algorithm: str) -> str:
        """The running hash when it covers every byte; else one pass over the session blob as Azure holds it."""
        if algorithm == "sha256" and session.hasher is not None:
            return session.hasher.hexdigest()
        hasher = hashlib.new(algorithm)
        loop = asyncio.get_running_loop()
        with storage_errors(self.blobs.location, f"reading upload {session.id}"):
            downloader = await self._client(session.id).download_blob()
            async for chunk in downloader.chunks():
                await loop.run_in_executor(self.io, hasher.update, chunk)
        return hasher.hexdigest()
