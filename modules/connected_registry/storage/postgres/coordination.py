"""Coordination of replicas through their shared PostgreSQL database (storage/coordination.py's seam).

Leases are session-level advisory locks on a connection each replica keeps for them, not rows with an expiry. Why:
the server lets a session's locks go the moment the session ends, so a replica that is SIGKILLed (the kernel closes
its socket) loses every lease at once, and one whose host vanished loses them when the keepalive probes fail
(dialect.py's session options: about a minute); no clock is compared across machines, nothing is renewed on a
timer, nothing is left to expire. Another replica tries the free leases at each heartbeat (every 2 s), so the work
moves within a few seconds of a kill. The other way round, a replica whose heartbeat fails (the session broke, or
took 10 s: a split network) takes its leases as lost (the server may have handed them on) and stops the work they
gate; after a break it may run on for up to one heartbeat, never longer, and it stands aside for a little more than
a heartbeat before it tries the leases again, so they move to a healthy replica rather than back to it.

Each replica also keeps a row in `replicas` (name, address, blob store, started, last seen, its lease session's
backend pid), which `connected-registry cluster status` joins with `pg_locks` to show who holds which lease.
The event feed's long polls wake on any replica's commits: a write that adds events sends a NOTIFY in its own
transaction (database.py), delivered at commit, and each replica LISTENs on a connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

import psycopg

from connected_registry.storage.coordination import LEASES, Replica, Work
from connected_registry.storage.disk import StorageError
from connected_registry.storage.postgres.dialect import SESSION_OPTIONS, describe
from connected_registry.timefmt import Clock
from connected_registry.waits import until_set, wait_event

log = logging.getLogger("connected_registry.cluster")

LEASE_CLASS = 0x6372  # advisory locks (int4, int4): (LEASE_CLASS, the lease's number), apart from the write lock
FILL_CLASS = 0x6373  # (FILL_CLASS, the digest's first 31 bits): single-flight fills
EVENTS_CHANNEL = "connected_registry_events"
HEARTBEAT_SECONDS = 2.0
# A heartbeat that takes longer gives the leases up: the network may be split, and the server hands them on when its
# keepalive probes fail (about a minute, dialect.py), so this replica stops well before another can start.
BEAT_TIMEOUT_SECONDS = 10.0
FORGOTTEN_SECONDS = 3600.0  # a replica silent this long leaves the registry of replicas
# A replica whose session broke waits this long before it tries the leases again, so a healthy replica (which tries at
# each heartbeat) takes them over rather than the one that just failed grabbing them back with its new session.
STAND_ASIDE_SECONDS = 1.5 * HEARTBEAT_SECONDS


def lease_number(lease: str) -> int:
    return LEASES.index(lease) + 1


def fill_key(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") >> 1


@dataclass
class _Lease:
    held: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)  # a new one at each acquisition


class PostgresCoordination:
    def __init__(self, dsn: str, clock: Clock) -> None:
        self.dsn, self.where, self.clock = dsn, describe(dsn), clock
        self.replica = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:6]}"
        self._leases: dict[str, _Lease] = {}
        self._session: psycopg.AsyncConnection | None = None  # the leases' session
        self._session_lock = asyncio.Lock()
        self._wanted = asyncio.Event()  # a lease was asked for: try it now, not at the next heartbeat
        self._tasks: list[asyncio.Task] = []
        self._row: tuple[str, str, float] = ("", "", 0.0)
        self._stand_aside_until = 0.0  # loop time before which this replica takes no lease (after its session broke)

    async def _connect(self) -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=10,
                                                     options=SESSION_OPTIONS)

    async def start(self, address: str, blob_store: str, on_events: Callable[[], None]) -> None:
        self._row = (address, blob_store, self.clock())
        async with self._session_lock:
            self._session = await self._connect()
            await self._beat(self._session)
        self._tasks = [asyncio.ensure_future(self._keep()), asyncio.ensure_future(self._listen(on_events))]

    # --- leases -------------------------------------------------------------------------------------

    async def hold(self, lease: str, work: Work) -> None:
        state = self._leases.setdefault(lease, _Lease())
        while True:
            self._wanted.set()
            await state.held.wait()
            lost = state.lost
            log.info("replica %s holds the lease %s", self.replica, lease)
            finished = await until_set(work(), lost)  # the work stops when the lease is lost
            if not lost.is_set():
                await self._release(lease, state)
                if finished is None:  # the work cancelled itself: as its result would say
                    raise asyncio.CancelledError
                return finished.result()
            log.warning("replica %s lost the lease %s: its work stops here and goes on where the lease went",
                        self.replica, lease)

    async def _release(self, lease: str, state: _Lease) -> None:
        state.held.clear()
        async with self._session_lock:
            with contextlib.suppress(psycopg.Error, AttributeError):
                await self._session.execute("SELECT pg_advisory_unlock(%s, %s)", (LEASE_CLASS, lease_number(lease)))

    async def _keep(self) -> None:
        """The heartbeat: the replica's row, the leases wanted and free, a new session when the old one broke."""
        while True:
            await wait_event(self._wanted, HEARTBEAT_SECONDS)
            self._wanted.clear()
            async with self._session_lock:
                try:
                    async with asyncio.timeout(BEAT_TIMEOUT_SECONDS):
                        if self._session is None or self._session.closed or self._session.broken:
                            self._session = await self._connect()
                        await self._beat(self._session)
                except (psycopg.Error, OSError, TimeoutError) as error:
                    self._lose_all(error)

    async def _beat(self, session: psycopg.AsyncConnection) -> None:
        address, blob_store, started = self._row
        now = self.clock()
        await session.execute(
            "INSERT INTO replicas (replica, address, blob_store, started, last_seen, backend_pid) "
            "VALUES (%s, %s, %s, %s, %s, pg_backend_pid()) ON CONFLICT (replica) DO UPDATE "
            "SET last_seen = EXCLUDED.last_seen, backend_pid = EXCLUDED.backend_pid",
            (self.replica, address, blob_store, started, now))
        standing_aside = asyncio.get_running_loop().time() < self._stand_aside_until
        for lease, state in self._leases.items():
            if not state.held.is_set() and not standing_aside:
                key = (LEASE_CLASS, lease_number(lease))
                cursor = await session.execute("SELECT pg_try_advisory_lock(%s, %s)", key)
                if (await cursor.fetchone())[0]:
                    state.lost = asyncio.Event()
                    state.held.set()
        await session.execute("DELETE FROM replicas WHERE last_seen < %s", (now - FORGOTTEN_SECONDS,))

    def _lose_all(self, error: Exception) -> None:
        """The session broke: the server lets its locks go, so every lease may be another replica's by now."""
        held = [lease for lease, state in self._leases.items() if state.held.is_set()]
        log.error("the leases' session to %s broke (%s); leases given up: %s", self.where, error, held or "none")
        for state in self._leases.values():
            state.held.clear()
            state.lost.set()
        self._stand_aside_until = asyncio.get_running_loop().time() + STAND_ASIDE_SECONDS
        if self._session is not None:
            with contextlib.suppress(Exception):
                asyncio.ensure_future(self._session.close())
            self._session = None

    # --- fills and events ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def single_flight(self, key: str) -> AsyncIterator[None]:
        """A session of its own for the wait: the lock is the fill's, and goes with its session if it dies."""
        async with await self._connect() as session:
            await session.execute("SELECT pg_advisory_lock(%s, %s)", (FILL_CLASS, fill_key(key)))
            yield

    async def _listen(self, on_events: Callable[[], None]) -> None:
        while True:
            try:
                async with await self._connect() as connection:
                    await connection.execute(f"LISTEN {EVENTS_CHANNEL}")
                    on_events()  # what was committed while no one listened
                    async for _ in connection.notifies():
                        on_events()
            except psycopg.Error as error:
                log.warning("listening for other replicas' events on %s failed (%s); again in %.0f s", self.where,
                            error, HEARTBEAT_SECONDS)
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self._session_lock:
            if self._session is not None:
                with contextlib.suppress(psycopg.Error):
                    await self._session.execute("DELETE FROM replicas WHERE replica = %s", (self.replica,))
                await self._session.close()
                self._session = None


def cluster_status(dsn: str) -> list[Replica]:
    """The replicas that registered in the last hour, the leases each holds now (`pg_locks`), oldest first."""
    try:
        with psycopg.connect(dsn, connect_timeout=10) as connection:
            rows = connection.execute(
                "SELECT r.replica, r.address, r.blob_store, r.started, r.last_seen, l.objid::text::bigint "
                "FROM replicas r LEFT JOIN pg_locks l ON l.pid = r.backend_pid AND l.locktype = 'advisory' "
                "AND l.classid::text::bigint = %s AND l.objsubid = 2 AND l.granted ORDER BY r.started, r.replica",
                (LEASE_CLASS,)).fetchall()
    except psycopg.Error as error:
        raise StorageError("DISK_ERROR", f"cannot read the replicas from {describe(dsn)}: {error}; check --metadata "
                           "(or ACR_REGISTRY_METADATA_DSN), that PostgreSQL runs and that a replica started") from None
    replicas: dict[str, Replica] = {}
    for name, address, blob_store, started, last_seen, lease in rows:
        replica = replicas.setdefault(name, Replica(name, address, blob_store, started, last_seen))
        if lease is not None and 0 < lease <= len(LEASES):
            replica.leases.append(LEASES[lease - 1])
    return list(replicas.values())
