"""The durability boundary: every fsync, rename, directory fsync and metadata commit goes through `Disk`.

Keeping them in one narrow class lets tests record their order (and, later, replay a power cut).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sqlite3

_SYNC_FILE_RANGE_WRITE = 2


def _load_sync_file_range():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load_sync_file_range()


class StorageError(Exception):
    """The data volume failed us. `code` is the status-detail code to report (SPEC 4)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


def storage_error_from_os(error: OSError, what: str) -> StorageError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError("DISK_STORAGE_FULL", f"{what}: the data volume is full; free space or grow the volume")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(
            "DISK_PERMISSION_DENIED",
            f"{what}: permission denied ({error.strerror}); run `chown -R 1000:1000` on the data volume",
        )
    return StorageError("DISK_ERROR", f"{what}: {error.strerror or error}")


class Disk:
    """Real file-system durability operations."""

    def fsync_file(self, fd: int) -> None:
        os.fsync(fd)

    def rename(self, source: str, target: str) -> None:
        os.rename(source, target)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def commit(self, connection: sqlite3.Connection) -> None:
        connection.commit()

    def start_writeback(self, fd: int, offset: int, length: int) -> None:
        """Ask the kernel to start writing a range now, so the final fsync has little left to do."""
        if _sync_file_range is not None:
            _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)
