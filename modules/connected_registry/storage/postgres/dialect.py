"""A PostgreSQL connection that runs the queries of storage/sqlite/ as they are written.

Those queries keep to the SQL both engines speak; two spellings differ and are translated here once per query:
`?` placeholders become `%s`, and `INSERT OR IGNORE INTO ...` becomes `INSERT INTO ... ON CONFLICT DO NOTHING`.
So one module of queries per part serves both backends. A connection that broke (the server restarted, the
network dropped) is opened again at its next use outside a transaction.
"""

from __future__ import annotations

import functools
from typing import Any, Iterable, Sequence

import psycopg
from psycopg.conninfo import conninfo_to_dict

from connected_registry.storage.disk import StorageError

_CONNECT_SECONDS = 10
# A replica that vanishes without closing its connection (its host lost power, the network split) must not hold the
# write lock of every replica for long: the server probes the connection after 30 s of silence and drops it after
# three missed probes, and ends a transaction left idle for 5 minutes (a write's file work takes far less).
SESSION_OPTIONS = ("-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3 "
                    "-c idle_in_transaction_session_timeout=300000")


@functools.lru_cache(maxsize=512)
def postgres_sql(sql: str) -> str:
    if "%" in sql:
        raise ValueError(f"a query with % would need escaping for psycopg: {sql}")
    sql = sql.replace("?", "%s")
    if sql.startswith("INSERT OR IGNORE INTO"):
        sql = "INSERT INTO" + sql[len("INSERT OR IGNORE INTO"):] + " ON CONFLICT DO NOTHING"
    return sql


def describe(dsn: str) -> str:
    """Where a DSN points, without its password: for messages."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.Error:
        raise StorageError("DISK_ERROR", "the metadata DSN is malformed (not shown: it may hold a password): give "
                           "postgresql://USER@HOST:PORT/DATABASE or libpq's key=value pairs") from None
    return f"{parts.get('dbname', '?')} on {parts.get('host', 'localhost')}:{parts.get('port', 5432)}"


class PostgresConnection:
    """One psycopg connection; `autocommit` for the readers (each query sees the latest commits), a transaction
    per write for the writer."""

    def __init__(self, dsn: str, *, autocommit: bool) -> None:
        self.dsn = dsn
        self.where = describe(dsn)
        self.autocommit = autocommit
        self.connection = self._connect()

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.dsn, autocommit=self.autocommit, connect_timeout=_CONNECT_SECONDS,
                                   options=SESSION_OPTIONS)
        except psycopg.Error as error:
            raise StorageError("DISK_ERROR", f"cannot reach the metadata database {self.where}: {error}; check "
                               "`serve --metadata` / ACR_REGISTRY_METADATA_DSN and that PostgreSQL runs") from error

    def ensure_open(self) -> None:
        if self.connection.closed or self.connection.broken:
            self.connection = self._connect()

    def execute(self, sql: str, parameters: Sequence[Any] = (), *, first: bool = False) -> psycopg.Cursor:
        """`first`: nothing was done on the connection yet (a read, or a transaction's first statement), so one
        found dropped is replaced and the statement sent again, once."""
        if self.autocommit:
            self.ensure_open()
        try:
            return self._send(sql, parameters)
        except StorageError:
            if not ((first or self.autocommit) and self.connection.broken):
                raise
        self.connection = self._connect()
        return self._send(sql, parameters)

    def _send(self, sql: str, parameters: Sequence[Any]) -> psycopg.Cursor:
        try:
            return self.connection.execute(postgres_sql(sql), parameters)
        except psycopg.OperationalError as error:
            raise StorageError("DISK_ERROR", f"the metadata database {self.where} failed: {error}") from error

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            with self.connection.cursor() as cursor:
                cursor.executemany(postgres_sql(sql), rows)

    def commit(self) -> None:
        self.connection.commit()

    def rollback(self) -> None:
        if not (self.connection.closed or self.connection.broken):
            self.connection.rollback()

    def close(self) -> None:
        self.connection.close()
