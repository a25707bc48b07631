"""SQLite metadata (WAL): schema version, forward migrations, one writer thread, a reader on the loop.

Every write is one transaction run on the single writer thread and committed through `Disk.commit`,
so a change is durable (synchronous=FULL) before the caller answers the client.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from connected_registry.storage.disk import FILE_MODE, Disk, StorageError, storage_error_from_os

T = TypeVar("T")

# Each entry migrates the schema from version N to N+1. Append only; never edit a released step.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE repositories (
        name TEXT PRIMARY KEY,
        created REAL NOT NULL
    );
    CREATE TABLE blobs (
        digest TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        origin TEXT NOT NULL,
        created REAL NOT NULL,
        last_used REAL NOT NULL
    );
    CREATE TABLE repository_blobs (
        repository TEXT NOT NULL,
        digest TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (repository, digest)
    ) WITHOUT ROWID;
    CREATE INDEX repository_blobs_digest ON repository_blobs(digest);
    CREATE TABLE manifests (
        repository TEXT NOT NULL,
        digest TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        artifact_type TEXT,
        subject TEXT,
        annotations TEXT,
        origin TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (repository, digest)
    ) WITHOUT ROWID;
    CREATE INDEX manifests_subject ON manifests(repository, subject) WHERE subject IS NOT NULL;
    CREATE INDEX manifests_digest ON manifests(digest);
    CREATE TABLE manifest_references (
        repository TEXT NOT NULL,
        manifest TEXT NOT NULL,
        child TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
        PRIMARY KEY (repository, manifest, child)
    ) WITHOUT ROWID;
    CREATE INDEX manifest_references_child ON manifest_references(child);
    CREATE TABLE tags (
        repository TEXT NOT NULL,
        tag TEXT NOT NULL,
        digest TEXT NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (repository, tag)
    ) WITHOUT ROWID;
    CREATE INDEX tags_digest ON tags(repository, digest);
    CREATE TABLE uploads (
        id TEXT PRIMARY KEY,
        repository TEXT NOT NULL,
        started REAL NOT NULL
    );
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        type TEXT NOT NULL CHECK (type IN ('TagSet', 'TagDeleted', 'ManifestPut', 'ManifestDeleted')),
        repository TEXT NOT NULL,
        tag TEXT,
        digest TEXT NOT NULL,
        media_type TEXT,
        size INTEGER,
        subject TEXT,
        origin TEXT NOT NULL,
        time TEXT NOT NULL
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        repository TEXT NOT NULL,
        operation TEXT NOT NULL CHECK (operation IN ('PushManifest', 'DeleteTag', 'DeleteManifest')),
        tag TEXT,
        digest TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'parked')),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created TEXT NOT NULL
    );
    CREATE INDEX outbox_repository ON outbox(repository, id);
    """,
    """
    CREATE TABLE state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE children (
        name TEXT PRIMARY KEY,
        display_name TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('Active', 'Inactive')),
        instance_id TEXT,
        device_id TEXT,
        mode TEXT,
        version TEXT,
        message_ttl TEXT,
        repositories TEXT,
        revoked TEXT NOT NULL DEFAULT '[]',
        activated TEXT,
        report TEXT,
        reported TEXT
    );
    """,
    """
    CREATE TABLE on_demand (
        digest TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        last_used REAL NOT NULL
    );
    CREATE INDEX on_demand_last_used ON on_demand(last_used);
    """,
    # The token that opened a client's upload session, for its cap; NULL for the sync's own sessions.
    """
    ALTER TABLE uploads ADD COLUMN owner TEXT;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def _connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA busy_timeout=30000")
    return connection


class MetadataDB:
    def __init__(self, data_dir: str, disk: Disk) -> None:
        self.path = os.path.join(data_dir, "metadata.db")
        self.disk = disk
        try:
            # Made here with its mode: SQLite gives the -wal and -shm files the database file's mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE))
            self.writer = _connect(self.path)
            self._migrate()
            self.reader = _connect(self.path)
        except sqlite3.DatabaseError as error:
            raise StorageError("DISK_ERROR", f"cannot open {self.path}: {error}") from error
        except OSError as error:
            raise storage_error_from_os(error, f"opening {self.path}") from error
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metadata-writer")

    def _migrate(self) -> None:
        version = self.writer.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(
                "DISK_SCHEMA_NEWER",
                f"the data volume has schema version {version}, newer than this program's {SCHEMA_VERSION}: "
                "run the newer connected-registry version that wrote it, or use another data volume",
            )
        if version == SCHEMA_VERSION:
            return
        self.writer.execute("BEGIN IMMEDIATE")
        try:
            for step in MIGRATIONS[version:]:
                for statement in step.split(";"):
                    if statement.strip():
                        self.writer.execute(statement)
            self.writer.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self.disk.commit(self.writer)
        except BaseException:
            self.writer.rollback()
            raise

    def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one write transaction on the calling (writer) thread."""
        self.writer.execute("BEGIN IMMEDIATE")
        try:
            result = work(self.writer)
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

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run one write transaction on the writer thread without stalling the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.transaction, work)

    async def run_on_writer(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def read(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        return self.reader.execute(sql, parameters).fetchall()

    def read_one(self, sql: str, parameters: tuple = ()) -> tuple | None:
        return self.reader.execute(sql, parameters).fetchone()

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.reader.close()
        self.writer.close()
