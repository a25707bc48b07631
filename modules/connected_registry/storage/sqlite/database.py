"""The metadata store in SQLite (WAL): one writer thread that runs every write transaction, a reader on the loop.

Every write is one transaction run on the single writer thread and committed through `Disk.commit`,
so a change is durable (synchronous=FULL) before the caller answers the client.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from connected_registry.storage.coordination import LocalCoordination
from connected_registry.storage.disk import FILE_MODE, Disk, StorageError, storage_error_from_os
from connected_registry.storage.metadata import MetadataReads, MetadataWrites
from connected_registry.storage.sqlite.content import ContentReads, ContentWrites
from connected_registry.storage.sqlite.control import ControlReads, ControlWrites
from connected_registry.storage.sqlite.housekeeping import HousekeepingReads, HousekeepingWrites
from connected_registry.storage.sqlite.log import LogReads, LogWrites
from connected_registry.storage.sqlite.schema import connect, migrate
from connected_registry.timefmt import Clock

T = TypeVar("T")


class SqliteReads(ContentReads, LogReads, ControlReads, HousekeepingReads):
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def check_readable(self) -> None:
        self.db.execute("SELECT 1").fetchone()


class SqliteWrites(SqliteReads, ContentWrites, LogWrites, ControlWrites, HousekeepingWrites):
    """The writer connection, inside a transaction (or, in `serialized`, between two)."""


class SqliteMetadata(SqliteReads):
    """`metadata.MetadataStore` in `<data>/metadata.db`; its reads go through the loop's own connection."""

    shared = False  # the data directory is one instance's

    def __init__(self, data_dir: str, disk: Disk) -> None:
        self.path = os.path.join(data_dir, "metadata.db")
        self.disk = disk
        try:
            # Made here with its mode: SQLite gives the -wal and -shm files the database file's mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE))
            self.writer = connect(self.path)
            migrate(self.writer, disk)
            super().__init__(connect(self.path))
        except sqlite3.DatabaseError as error:
            raise StorageError("DISK_ERROR", f"cannot open {self.path}: {error}") from error
        except OSError as error:
            raise storage_error_from_os(error, f"opening {self.path}") from error
        self._writes = SqliteWrites(self.writer)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metadata-writer")

    def write_now(self, work: Callable[[MetadataWrites], T]) -> T:
        self.writer.execute("BEGIN IMMEDIATE")
        try:
            result = work(self._writes)
            self.disk.commit(self.writer)
            return result
        except sqlite3.OperationalError as error:
            self.writer.rollback()
            if "disk" in str(error).lower() or "full" in str(error).lower():
                raise StorageError("DISK_STORAGE_FULL", f"metadata write failed: {error}") from error
            raise StorageError("DISK_ERROR", f"metadata write failed: {error}") from error
        except BaseException:
            if self.writer.in_transaction:
                self.writer.rollback()
            raise

    async def write(self, work: Callable[[MetadataWrites], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.write_now, work)

    async def serialized(self, work: Callable[[MetadataReads], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, self._writes)

    def coordination(self, clock: Clock) -> LocalCoordination:
        return LocalCoordination()

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.db.close()
        self.writer.close()
