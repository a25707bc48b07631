"""The metadata store in PostgreSQL: one writer connection on one thread per replica, a reader on the loop.

Order across replicas: every write transaction first takes one transaction-level advisory lock (`WRITE_LOCK`), held
until it commits or rolls back, so the writes of all replicas commit one at a time. That is what keeps the event
log's and the outbox's order: an event's seq (an identity column) and an outbox entry's id are drawn while the lock
is held, so they are drawn in commit order, and a reader never sees seq N+1 committed while N is still to come; a
transaction that rolls back leaves a gap for good, and readers, which ask for `seq > cursor`, skip it. Taking the
lock first, before any row lock, also means two writers never wait on each other in a cycle. `serialized` work
takes the same lock, so it runs between two writes of any replica, not only this one's.

A write is durable when its commit returns (synchronous_commit, PostgreSQL's default); file work it depends on runs
inside it before `Disk.commit`, as with SQLite.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

import psycopg

from connected_registry.storage.disk import Disk, StorageError
from connected_registry.storage.metadata import MetadataReads, MetadataWrites
from connected_registry.storage.postgres.coordination import EVENTS_CHANNEL, PostgresCoordination
from connected_registry.storage.postgres.dialect import PostgresConnection
from connected_registry.storage.postgres.schema import migrate
from connected_registry.storage.sqlite.content import ContentReads, ContentWrites
from connected_registry.storage.sqlite.control import ControlReads, ControlWrites
from connected_registry.storage.sqlite.housekeeping import HousekeepingReads, HousekeepingWrites
from connected_registry.storage.sqlite.log import LogReads, LogWrites
from connected_registry.storage.records import EventRecord
from connected_registry.timefmt import Clock

T = TypeVar("T")
WRITE_LOCK = 0x6372_0002


class PostgresReads(ContentReads, LogReads, ControlReads, HousekeepingReads):
    def __init__(self, db: PostgresConnection) -> None:
        self.db = db  # type: ignore[assignment]  # runs the SQLite modules' queries (dialect.py)

    def check_readable(self) -> None:
        self.db.execute("SELECT 1").fetchone()


class PostgresWrites(PostgresReads, ContentWrites, LogWrites, ControlWrites, HousekeepingWrites):
    """The writer connection, inside a transaction that holds `WRITE_LOCK`."""

    added_events = False  # this transaction added events: it tells the other replicas' long polls (NOTIFY)

    def add_event(self, event: EventRecord) -> None:
        super().add_event(event)
        self.added_events = True


class PostgresMetadata(PostgresReads):
    """`metadata.MetadataStore` in the PostgreSQL database `dsn` names (several replicas may share it)."""

    shared = True

    def __init__(self, dsn: str, disk: Disk) -> None:
        self.disk = disk
        self.writer = PostgresConnection(dsn, autocommit=False)
        try:
            migrate(self.writer.connection, self.writer.where)
            super().__init__(PostgresConnection(dsn, autocommit=True))
        except BaseException:
            self.writer.close()
            raise
        self._writes = PostgresWrites(self.writer)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metadata-writer")

    def _locked(self, work: Callable[[PostgresWrites], T], commit: Callable[[], None]) -> T:
        self.writer.ensure_open()
        try:
            self.writer.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,), first=True)
            self._writes.added_events = False
            result = work(self._writes)
            if self._writes.added_events:  # delivered at the commit, to every replica listening
                self.writer.execute(f"NOTIFY {EVENTS_CHANNEL}")
            commit()
            return result
        except psycopg.Error as error:
            self.writer.rollback()
            raise StorageError("DISK_ERROR", f"metadata write to {self.writer.where} failed: {error}") from error
        except BaseException:
            self.writer.rollback()
            raise

    def write_now(self, work: Callable[[MetadataWrites], T]) -> T:
        return self._locked(work, lambda: self.disk.commit(self.writer))

    async def write(self, work: Callable[[MetadataWrites], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.write_now, work)

    async def serialized(self, work: Callable[[MetadataReads], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._locked, work, self.writer.commit)

    def coordination(self, clock: Clock) -> PostgresCoordination:
        return PostgresCoordination(self.writer.dsn, clock)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.db.close()
        self.writer.close()
