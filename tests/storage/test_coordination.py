"""The coordination seam (storage/coordination.py) on both metadata stores: SQLite holds every lease at once; on
PostgreSQL a lease has one holder, whose work stops when its session breaks while another replica takes over, and
single-flight keys exclude each other across replicas."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psycopg

from connected_registry.storage import RegistryStore
from connected_registry.storage.coordination import EVENT_RETENTION, SYNC, LocalCoordination
from connected_registry.storage.postgres.coordination import PostgresCoordination, cluster_status
from tests.support.postgres import PostgresServer


class Work:
    """A lease's work: counts its starts, runs until cancelled, notes when it was cancelled."""

    def __init__(self) -> None:
        self.started, self.cancelled = asyncio.Event(), asyncio.Event()
        self.starts = 0

    async def __call__(self) -> None:
        self.starts += 1
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def test_sqlite_runs_the_work_at_once_as_the_one_replica(tmp_path: Path):
    async with RegistryStore(str(tmp_path)) as store:
        assert isinstance(store.coordination, LocalCoordination)
        work = Work()
        holding = asyncio.ensure_future(store.coordination.hold(SYNC, work))
        await asyncio.wait_for(work.started.wait(), 1)
        holding.cancel()
        await asyncio.gather(holding, return_exceptions=True)


async def test_a_lease_has_one_holder_and_moves_when_its_session_breaks(postgres: PostgresServer, tmp_path: Path):
    dsn = postgres.new_database()
    RegistryStore(str(tmp_path), metadata=dsn).close()  # the schema, with the replicas' table
    first, second = PostgresCoordination(dsn, time.time), PostgresCoordination(dsn, time.time)
    await first.start("127.0.0.1:1", "filesystem", on_events=lambda: None)
    await second.start("127.0.0.1:2", "filesystem", on_events=lambda: None)
    first_work, second_work = Work(), Work()
    holds = [asyncio.ensure_future(first.hold(EVENT_RETENTION, first_work))]
    await asyncio.wait_for(first_work.started.wait(), 10)
    holds.append(asyncio.ensure_future(second.hold(EVENT_RETENTION, second_work)))
    try:
        await _until(lambda: {r.replica for r in cluster_status(dsn)} == {first.replica, second.replica})
        assert not second_work.started.is_set()  # one holder: the other waits
        assert [r.leases for r in cluster_status(dsn) if r.replica == first.replica] == [[EVENT_RETENTION]]

        with psycopg.connect(dsn, autocommit=True) as admin:  # the first replica's lease session dies
            admin.execute("SELECT pg_terminate_backend(backend_pid) FROM replicas WHERE replica = %s",
                          (first.replica,))
        await asyncio.wait_for(second_work.started.wait(), 15)
        await asyncio.wait_for(first_work.cancelled.wait(), 15)  # the first stops its work: never two holders
        await _until(lambda: [r.leases for r in cluster_status(dsn) if r.replica == second.replica]
                     == [[EVENT_RETENTION]])
    finally:
        for holding in holds:
            holding.cancel()
        await asyncio.gather(*holds, return_exceptions=True)
        await first.close()
        await second.close()
    assert cluster_status(dsn) == []  # a replica that stops leaves the registry of replicas


async def test_single_flight_keys_exclude_each_other_across_replicas(postgres: PostgresServer, tmp_path: Path):
    dsn = postgres.new_database()
    first, second = PostgresCoordination(dsn, time.time), PostgresCoordination(dsn, time.time)
    order: list[str] = []

    async def fill(coordination: PostgresCoordination, name: str, inside: asyncio.Event | None = None) -> None:
        async with coordination.single_flight("sha256:" + "ab" * 32):
            order.append(f"{name} in")
            if inside is not None:  # held until the other replica waits for the same key
                inside.set()
                await _until(lambda: _waiting_for_advisory_lock(dsn))
            order.append(f"{name} out")

    inside = asyncio.Event()
    holding = asyncio.ensure_future(fill(first, "first", inside))
    await asyncio.wait_for(inside.wait(), 10)
    await asyncio.gather(holding, fill(second, "second"))
    assert order == ["first in", "first out", "second in", "second out"]


def _waiting_for_advisory_lock(dsn: str) -> bool:
    with psycopg.connect(dsn) as connection:
        return connection.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                                  ).fetchone()[0] > 0


async def _until(condition, timeout: float = 15.0) -> None:
    """Polls `condition` (run in a thread: it may query the database) until it holds, or fails at the deadline."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
