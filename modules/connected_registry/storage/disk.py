"""The durability boundary: every fsync, rename, directory fsync and metadata commit goes through `Disk`.

Keeping them in one narrow class lets tests record their order (and, later, replay a power cut).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
from typing import Protocol

_SYNC_FILE_RANGE_WRITE = 2
# The data volume is the registry's alone: content, metadata, upload sessions and keys are readable by nobody else.
# Every file and directory is created with these modes (the umask can only narrow them).
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


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


def restrict_modes(data_dir: str) -> None:
    """Files 0600 and directories 0700 throughout the data directory, which an older version left readable to all.
    The data directory's own mode is set last and says the walk is done, so it runs once per volume."""
    if stat.S_IMODE(os.stat(data_dir).st_mode) == DIRECTORY_MODE:
        return
    pending = [data_dir]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    os.chmod(entry.path, DIRECTORY_MODE)
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    os.chmod(entry.path, FILE_MODE)
    os.chmod(data_dir, DIRECTORY_MODE)


class Transaction(Protocol):
    """A metadata transaction that `Disk.commit` makes durable: a SQLite connection, a PostgreSQL one, any backend's
    connection with a `commit`. Whatever the backend, file work a commit depends on is fsynced and renamed first."""

    def commit(self) -> None: ...


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

    def commit(self, connection: Transaction) -> None:
        connection.commit()

    def start_writeback(self, fd: int, offset: int, length: int) -> None:
        """Ask the kernel to start writing a range now, so the final fsync has little left to do."""
        if _sync_file_range is not None:
            _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)
