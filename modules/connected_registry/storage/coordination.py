"""Coordination between the replicas of one registry (issue 18): leases for the work that must run once (the sync
with the parent and its outbox drain, the garbage collection schedule, event retention, the twin reporter),
single-flight for on-demand fills, wake-ups of the event feed's long polls, and the replicas' registry.

The embedded default (SQLite in the data directory) is one replica by construction: `LocalCoordination` holds every
lease from the start and costs nothing. Shared metadata (PostgreSQL) brings storage/postgres/coordination.py.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable, Protocol

Work = Callable[[], Awaitable[None]]

# The leases, by the work they gate. One name, one lease, on every replica.
SYNC = "sync"  # the sync engine with the parent, and its outbox drain
GARBAGE_COLLECTION = "garbage-collection"  # the schedule (a run asked for runs where it was asked)
EVENT_RETENTION = "event-retention"  # event pruning and the scope clean-up
TWIN_REPORTER = "twin-reporter"
LEASES = (SYNC, GARBAGE_COLLECTION, EVENT_RETENTION, TWIN_REPORTER)


@dataclass
class Replica:
    """A replica as the cluster sees it (`connected-registry cluster status`)."""

    replica: str
    address: str
    blob_store: str
    started: float
    last_seen: float
    leases: list[str] = field(default_factory=list)


class Coordination(Protocol):
    async def start(self, address: str, blob_store: str, on_events: Callable[[], None]) -> None:
        """Register this replica (serving at `address`), and call `on_events` when another replica added events."""

    async def hold(self, lease: str, work: Work) -> None:
        """Run `work` while this replica holds `lease` (waiting for it first), cancelled when the lease is lost and
        started again when it comes back; returns when `work` does, letting the lease go."""

    def single_flight(self, key: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Held by one replica at a time for `key` (a digest being filled); others wait for it."""

    async def close(self) -> None: ...


class LocalCoordination:
    """One replica: every lease is held, every single-flight is this process's own (the fills' own dedup)."""

    async def start(self, address: str, blob_store: str, on_events: Callable[[], None]) -> None:
        return None

    async def hold(self, lease: str, work: Work) -> None:
        await work()

    @contextlib.asynccontextmanager
    async def single_flight(self, key: str) -> AsyncIterator[None]:
        yield

    async def close(self) -> None:
        return None
