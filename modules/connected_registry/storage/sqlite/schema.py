"""The SQLite schema: its version (PRAGMA user_version), the forward migrations, and how a connection is opened."""

from __future__ import annotations

import sqlite3

from connected_registry.storage.disk import Disk, StorageError

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
    # An index entry the `platforms` setting left out (issue 16): absent by design, not missing.
    """
    ALTER TABLE manifest_references ADD COLUMN left_out INTEGER NOT NULL DEFAULT 0;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA busy_timeout=30000")
    return connection


def migrate(connection: sqlite3.Connection, disk: Disk) -> None:
    """Bring the volume's schema to this program's version, in one transaction; refuse a newer one."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StorageError(
            "DISK_SCHEMA_NEWER",
            f"the data volume has schema version {version}, newer than this program's {SCHEMA_VERSION}: "
            "run the newer connected-registry version that wrote it, or use another data volume",
        )
    if version == SCHEMA_VERSION:
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        for step in MIGRATIONS[version:]:
            for statement in step.split(";"):
                if statement.strip():
                    connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        disk.commit(connection)
    except BaseException:
        connection.rollback()
        raise
