"""The PostgreSQL metadata store on its own, against a real server: the same schema as SQLite's, migrations that run
once when several replicas start together, a newer schema refused, and the event log's and outbox's order when
several replicas write at once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from connected_registry.storage import Disk, RegistryStore, StorageError
from connected_registry.storage.control import ControlStore
from connected_registry.storage.postgres import PostgresMetadata
from connected_registry.storage.postgres.schema import SCHEMA_VERSION
from connected_registry.storage.records import EventRecord
from connected_registry.storage.sqlite.schema import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from tests.support.postgres import PostgresServer
from tests.support.processes import environment, stop_process, wait_until


def _event(tag: str) -> EventRecord:
    return EventRecord("TagSet", "app", tag, "sha256:" + "ab" * 32, None, None, None, "test",
                       "2026-01-01T00:00:00.000Z")


def _columns_in_postgres(dsn: str) -> dict[str, list[str]]:
    with psycopg.connect(dsn) as connection:
        rows = connection.execute("SELECT table_name, column_name FROM information_schema.columns WHERE "
                                  "table_schema = 'public' AND table_name NOT IN ('schema_version', 'replicas') "
                                  "ORDER BY table_name, ordinal_position").fetchall()
    columns: dict[str, list[str]] = {}
    for table, column in rows:
        columns.setdefault(table, []).append(column)
    return columns


def _columns_in_sqlite(path: Path) -> dict[str, list[str]]:
    with sqlite3.connect(path) as connection:
        tables = [row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        columns = {table: [row[1] for row in connection.execute(f"PRAGMA table_info({table})")] for table in tables}
    connection.close()
    return columns


def test_a_fresh_database_gets_the_schema_sqlite_has_at_the_same_version(postgres: PostgresServer, tmp_path: Path):
    dsn = postgres.new_database()
    RegistryStore(str(tmp_path / "pg"), metadata=dsn).close()
    RegistryStore(str(tmp_path / "lite"), metadata="sqlite").close()
    assert SCHEMA_VERSION == SQLITE_SCHEMA_VERSION
    with psycopg.connect(dsn) as connection:
        assert connection.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    assert _columns_in_postgres(dsn) == _columns_in_sqlite(tmp_path / "lite" / "metadata.db")


def test_a_newer_schema_is_refused_with_disk_schema_newer(postgres: PostgresServer, tmp_path: Path):
    dsn = postgres.new_database()
    RegistryStore(str(tmp_path), metadata=dsn).close()
    with psycopg.connect(dsn) as connection:
        connection.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StorageError) as raised:
        RegistryStore(str(tmp_path), metadata=dsn)
    assert raised.value.code == "DISK_SCHEMA_NEWER"
    assert "newer" in str(raised.value) and "--metadata" in str(raised.value)


def test_replicas_starting_together_migrate_once_and_make_one_instance_id(postgres: PostgresServer):
    dsn = postgres.new_database()
    together = threading.Barrier(6)

    def open_store() -> tuple[PostgresMetadata, str]:
        together.wait()
        store = PostgresMetadata(dsn, Disk())
        return store, ControlStore(store).instance_id()

    with ThreadPoolExecutor(6) as pool:
        opened = list(pool.map(lambda _: open_store(), range(6)))
    assert len({instance_id for _, instance_id in opened}) == 1
    for store, instance_id in opened:
        assert store.control_state().instance_id == instance_id
        store.close()
    with psycopg.connect(dsn) as connection:
        assert connection.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_no_reader_sees_an_event_or_outbox_entry_before_an_earlier_one_of_another_replica(postgres: PostgresServer):
    """Replica A draws seq 1 and is slow to commit; replica B's event, written meanwhile, must not be visible
    before A's (a follower at cursor 0 would read seq 2, move its cursor past 1, and never see it)."""
    dsn = postgres.new_database()
    first, second, follower = (PostgresMetadata(dsn, Disk()) for _ in range(3))
    inserted, release = threading.Event(), threading.Event()

    def slow_write(tx) -> None:
        tx.add_event(_event("first"))
        tx.add_outbox_entry("app", "PushManifest", "first", "sha256:" + "ab" * 32, "2026-01-01T00:00:00.000Z")
        inserted.set()
        assert release.wait(30)

    def quick_write(tx) -> None:
        tx.add_event(_event("second"))
        tx.add_outbox_entry("app", "PushManifest", "second", "sha256:" + "ab" * 32, "2026-01-01T00:00:00.000Z")

    try:
        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(first.write_now, slow_write)
            assert inserted.wait(30)
            quick = pool.submit(second.write_now, quick_write)
            wait_until(lambda: quick.done() or _waits_for_a_lock(follower), what="the second write to end or wait")
            seen_early = follower.events(0, 10), follower.outbox()
            release.set()
            slow.result(30), quick.result(30)
        assert seen_early == ([], [])
        assert [event["tag"] for event in follower.events(0, 10)] == ["first", "second"]
        assert [entry["tag"] for entry in follower.outbox()] == ["first", "second"]
        assert follower.event_head() == 2
    finally:
        release.set()
        for store in (first, second, follower):
            store.close()


def _waits_for_a_lock(store: PostgresMetadata) -> bool:
    return store.db.execute("SELECT 1 FROM pg_locks WHERE NOT granted").fetchone() is not None


async def test_a_store_reconnects_after_the_server_dropped_its_connections(postgres: PostgresServer, tmp_path: Path):
    dsn = postgres.new_database()
    async with RegistryStore(str(tmp_path), metadata=dsn) as store:
        await store.control.update_state(sync_cursor=5)
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                          "AND pid <> pg_backend_pid()")
        assert store.control.state().sync_cursor == 5  # a read, again on a new connection
        await store.control.update_state(sync_cursor=6)
        assert store.control.state().sync_cursor == 6
        # A replica that vanishes without a word does not hold the write lock for long, new connections included.
        writer = store.metadata.writer
        assert writer.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("5min",)
        assert writer.execute("SHOW tcp_keepalives_idle").fetchone() == ("30",)
        writer.rollback()


@pytest.mark.parametrize(("dsn", "says"), [
    ("postgresql://registry:s3cret@127.0.0.1:1/registry", "cannot reach the metadata database registry on 127.0.0.1:1"),
    ("mysql://registry:s3cret@127.0.0.1/registry", "unknown metadata store 'mysql'"),
    ("host=127.0.0.1 password=s3cret port", "the metadata DSN is malformed"),
])
def test_a_metadata_store_that_cannot_be_opened_is_named_without_its_password(tmp_path: Path, dsn: str, says: str):
    with pytest.raises(StorageError) as raised:
        RegistryStore(str(tmp_path), metadata=dsn)
    assert raised.value.code == "DISK_ERROR"
    assert says in str(raised.value) and "s3cret" not in str(raised.value)
    assert not (tmp_path / "metadata.db").exists()


_HOLD_THE_WRITE_LOCK = """
import sys, threading
from connected_registry.storage import Disk
from connected_registry.storage.postgres import PostgresMetadata
from tests.storage.test_postgres import _event

def hold(tx):
    tx.add_event(_event("killed"))
    print("holding", flush=True)
    threading.Event().wait()  # until SIGKILL

PostgresMetadata(sys.argv[1], Disk()).write_now(hold)
"""


def test_a_replica_killed_inside_a_write_leaves_nothing_and_holds_up_no_other(postgres: PostgresServer):
    dsn = postgres.new_database()
    store = PostgresMetadata(dsn, Disk())
    killed = subprocess.Popen([sys.executable, "-c", _HOLD_THE_WRITE_LOCK, dsn], stdout=subprocess.PIPE, text=True,
                              env=environment({"PYTHONPATH": os.pathsep.join(sys.path)}))
    try:
        assert killed.stdout.readline().strip() == "holding"
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(store.write_now, lambda tx: tx.add_event(_event("after")))
            wait_until(lambda: _waits_for_a_lock(store), what="the write to wait for the killed replica's lock")
            killed.send_signal(signal.SIGKILL)
            waiting.result(timeout=30)
        assert [event["tag"] for event in store.events(0, 10)] == ["after"]
    finally:
        stop_process(killed)
        store.close()
