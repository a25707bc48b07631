"""The filesystem blob store (the default): content-addressed files `blobs/<algorithm>/<2 hex>/<hex>` in the data
volume, written only by atomic rename. One of the two `BlobStore`s (blobstore.py)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable

from connected_registry.oci.digest import is_digest, parse_digest
from connected_registry.storage.blobstore import StoredBlob
from connected_registry.storage.disk import DIRECTORY_MODE, Disk, StorageError, storage_error_from_os

ALGORITHMS = ("sha256", "sha512")
READ_CHUNK = 1 << 20  # bytes per read of a blob streamed out (`chunks`)


class BlobFiles:
    def __init__(self, root: str, disk: Disk) -> None:
        self.root = os.path.join(root, "blobs")
        self.incoming = os.path.join(root, "uploads")
        self.disk = disk
        self._prepare()

    def _prepare(self) -> None:
        created = False
        directories = [self.root, *(os.path.join(self.root, algorithm) for algorithm in ALGORITHMS)]
        directories += [os.path.join(self.root, algorithm, f"{prefix:02x}") for algorithm in ALGORITHMS
                        for prefix in range(256)]
        for path in directories:  # parents first: makedirs gives its mode only to the last level
            if not os.path.isdir(path):
                os.makedirs(path, DIRECTORY_MODE, exist_ok=True)
                created = True
        os.makedirs(self.incoming, DIRECTORY_MODE, exist_ok=True)
        if created:
            # A new directory entry is durable once its parent is fsynced; the empty children need nothing.
            for algorithm in ALGORITHMS:
                self.disk.fsync_dir(os.path.join(self.root, algorithm))
            self.disk.fsync_dir(self.root)
            self.disk.fsync_dir(os.path.dirname(self.root))

    def path(self, digest: str) -> str:
        """The file of a digest. Only a validated digest becomes a path component."""
        algorithm, hex_part = parse_digest(digest)
        return os.path.join(self.root, algorithm, hex_part[:2], hex_part)

    def exists(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def stored(self, digest: str, size: int) -> StoredBlob:
        return StoredBlob(self.path(digest), size)

    async def chunks(self, digest: str, start: int, end: int) -> AsyncIterator[bytes]:
        """The bytes [start, end) of a stored blob, a read at a time off the event loop."""
        loop = asyncio.get_running_loop()
        try:
            file = open(self.path(digest), "rb")  # noqa: SIM115 - closed below, after the last chunk
        except OSError as error:
            raise storage_error_from_os(error, f"reading blob {digest}") from error
        with file:
            file.seek(start)
            position = start
            while position < end:
                data = await loop.run_in_executor(None, file.read, min(READ_CHUNK, end - position))
                if not data:
                    raise StorageError("DISK_ERROR", f"blob {digest} is shorter on disk than its recorded size; "
                                       "push it again")
                position += len(data)
                yield data

    def read_small(self, digest: str, limit: int) -> bytes | None:
        try:
            with open(self.path(digest), "rb") as file:
                return file.read(limit)
        except FileNotFoundError:
            return None

    async def aclose(self) -> None:
        pass

    def temporary_path(self) -> str:
        return os.path.join(self.incoming, f"tmp-{uuid.uuid4()}")

    def sync_data(self, temporary: str) -> None:
        """fsync a finished temporary file (done off the writer thread, before `install`)."""
        try:
            fd = os.open(temporary, os.O_RDONLY)
            try:
                self.disk.fsync_file(fd)
            finally:
                os.close(fd)
        except OSError as error:
            raise storage_error_from_os(error, "syncing an upload to disk") from error

    def install(self, temporary: str, digest: str, data_synced: bool) -> None:
        """Make verified bytes durable under their digest: data fsynced, renamed into place, directory fsynced.

        Runs on the metadata writer thread just before the commit that makes the blob visible, so it
        cannot interleave with garbage collection removing the same digest.
        """
        target = self.path(digest)
        try:
            if os.path.exists(target):
                os.unlink(temporary)
                # Left by a push killed between its rename and its directory fsync: make the entry durable now.
                self.disk.fsync_dir(os.path.dirname(target))
                return
            if not data_synced:
                self.sync_data(temporary)
            self.disk.rename(temporary, target)
            self.disk.fsync_dir(os.path.dirname(target))
        except OSError as error:
            raise storage_error_from_os(error, f"storing blob {digest}") from error

    def write_small(self, data: bytes, digest: str) -> None:
        """Durably store a small blob (a manifest) held in memory. Call on the metadata writer thread."""
        if self.exists(digest):
            try:  # as in `install`: the file may have been left by a killed push
                self.disk.fsync_dir(os.path.dirname(self.path(digest)))
            except OSError as error:
                raise storage_error_from_os(error, f"storing {digest}") from error
            return
        temporary = self.temporary_path()
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as error:
            raise storage_error_from_os(error, f"storing {digest}") from error
        try:
            try:
                _write_all(fd, data)
                self.disk.fsync_file(fd)
            finally:
                os.close(fd)
            self.install(temporary, digest, data_synced=True)
        except OSError as error:
            raise storage_error_from_os(error, f"storing {digest}") from error
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)

    def write_probe(self, size: int) -> None:
        """Write, fsync and remove `size` bytes in the uploads folder: can the volume take data now?"""
        temporary = self.temporary_path()
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(fd, bytes(size))
                self.disk.fsync_file(fd)
            finally:
                os.close(fd)
        except OSError as error:
            raise storage_error_from_os(error, "checking the data volume") from error
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)

    def remove(self, digest: str) -> None:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            pass

    def remove_strays(self, held: Callable[[str], bool], cutoff: float) -> int:
        """Files renamed into place whose metadata commit never happened (a crash in between)."""
        removed = 0
        for algorithm_dir in os.scandir(self.root):
            for prefix_dir in os.scandir(algorithm_dir.path):
                for entry in os.scandir(prefix_dir.path):
                    digest = f"{algorithm_dir.name}:{entry.name}"
                    if not is_digest(digest) or held(digest):
                        continue
                    try:
                        if entry.stat().st_mtime < cutoff:
                            os.unlink(entry.path)
                            removed += 1
                    except FileNotFoundError:
                        pass
        return removed


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
