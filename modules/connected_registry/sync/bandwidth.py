"""A byte budget for the parent link (issue 16): `parent.bandwidth.maxBytesPerSecond`, and its `windows`.

One budget for what the instance moves over its parent link, both ways. Blob bodies wait for it chunk by chunk:
coming down (the sync's copies and the on-demand fills, sync/downstream.py) and going up (the outbox's uploads,
parent_client's upload body). Manifests are counted against it without waiting: they are small, and a device may
be waiting for one. Control calls (activation, the feed's long poll, status reports) are neither paced nor
counted: they are tiny, and must never starve behind a layer.

A device waiting goes first: while an on-demand fill moves, background transfers (the sync, the outbox) get at most
BACKGROUND_SHARE of the budget, and the fill what they leave. A new limit (a twin change, a window opening or
closing) applies to the transfers in flight: every waiter looks again at once, or within REVISIT_SECONDS.

Downloads are paced where they are read, but what they pay for is what has arrived (`bytes_arrived`: read, waiting
in aiohttp's buffer and in the socket's), so bytes the buffers took ahead are paid for at once, by waiting. A
metered blob GET also asks for a read buffer of one chunk (`chunk_bytes`) and a small socket receive buffer
(`narrow_receive_buffer`): on loopback or a fast link the kernel would otherwise take megabytes at once.

The parts: `BandwidthPolicy` (the limit in force at a moment, pure), `Pacer` (a token bucket in two lanes on an
injected clock, pure), `RateMeter` (bytes per second used lately, pure), and `LinkBudget`, what transfers await.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import NamedTuple

from connected_registry.durations import parse_duration
from connected_registry.sync.schedule import SyncSchedule
from connected_registry.waits import wait_event

BURST_SECONDS = 0.1  # after a pause the link may carry this much of a second's budget at once
BACKGROUND_SHARE = 0.1  # of the budget, what background transfers keep while an on-demand fill moves
URGENT_HOLD_SECONDS = 1.0  # after a fill's last chunk is paid for, background still yields this long
CHUNK_SECONDS = 0.05  # a metered read or write moves about this much of a second's budget
MIN_CHUNK_BYTES, MAX_CHUNK_BYTES = 8 << 10, 1 << 20
RECEIVE_BUFFER_CHUNKS = 1  # a metered download's socket buffer (the kernel doubles it: about 0.1 s of the budget),
MIN_RECEIVE_BUFFER = 64 << 10  # and at least this: a window under two segments (64 KiB each on loopback) stalls
REVISIT_SECONDS = 0.25  # a waiter looks again at least this often (a window opening, the clock)
METER_SECONDS = 2.0  # currentBytesPerSecond: the average over this many seconds


@dataclass(frozen=True)
class BandwidthWindow:
    schedule: SyncSchedule  # the cron and the duration after each fire
    limit: int  # bytes per second inside it; 0: unlimited


class BandwidthPolicy:
    """The limit of the link at a moment: inside a window its own limit, else `limit` (0: unlimited everywhere).
    Where windows overlap, the smallest limit of theirs holds: the link is never asked to carry more than any window
    it is in allows."""

    def __init__(self, limit: int = 0, windows: tuple[BandwidthWindow, ...] = ()) -> None:
        self.limit, self.windows = limit, windows

    @classmethod
    def from_settings(cls, bandwidth) -> "BandwidthPolicy":
        """From `settings.BandwidthSettings`."""
        return cls(bandwidth.maxBytesPerSecond, tuple(
            BandwidthWindow(SyncSchedule(window.schedule, parse_duration(window.duration)), window.maxBytesPerSecond)
            for window in bandwidth.windows))

    def limit_at(self, now: datetime) -> tuple[int, datetime | None]:
        """The limit in force at `now` (0: unlimited) and the next moment it may change (None: never)."""
        in_force: list[int] = []
        change: datetime | None = None
        for window in self.windows:
            current = window.schedule.current_window(now)
            if current is not None:
                in_force.append(window.limit)
            boundary = current.end if current is not None else window.schedule.next_window(now).start
            if boundary is not None and (change is None or boundary < change):
                change = boundary
        return (_smallest(in_force) if in_force else self.limit), change


def _smallest(limits: list[int]) -> int:
    limited = [limit for limit in limits if limit]
    return min(limited) if limited else 0


class _Bucket:
    """Bytes booked on the link, and bytes paid for at `rate` per second (0: everything is paid at once). What is
    paid may run ahead of what is booked by BURST_SECONDS of the rate: the bucket's tokens."""

    def __init__(self, now: float) -> None:
        self.rate = 0.0
        self.booked = self.paid = 0.0
        self.at = now

    def advance(self, now: float) -> None:
        if self.rate:
            self.paid = min(self.booked + self.rate * BURST_SECONDS, self.paid + max(now - self.at, 0.0) * self.rate)
        else:
            self.paid = max(self.paid, self.booked)
        self.at = now

    def set_rate(self, rate: float, now: float) -> None:
        self.advance(now)  # what was paid until now, at the old rate
        self.rate = rate
        self.advance(now)

    def book(self, count: int, now: float) -> float:
        """Books `count` bytes; returns their place: they are paid for once `paid` reaches it."""
        self.advance(now)
        self.booked += count
        return self.booked

    def settle(self, now: float) -> None:
        """Forgive what is owed: a lane that need not wait now starts afresh."""
        self.advance(now)
        self.paid = max(self.paid, self.booked)

    def seconds_until(self, place: float, now: float) -> float:
        self.advance(now)
        owed = place - self.paid
        return 0.0 if not self.rate or owed < 1 else owed / self.rate  # under a byte: rounding, not a debt


class Ticket(NamedTuple):
    """A booking: its place in the link's lane, and in the background lane (None for an on-demand fill)."""

    link: float
    background: float | None


class Pacer:
    """A token bucket for the whole link, and a second one at BACKGROUND_SHARE of its rate that background
    bookings must also clear while an on-demand fill is moving. Pure: every `now` is passed in (monotonic seconds)."""

    def __init__(self, now: float) -> None:
        self.link, self.background = _Bucket(now), _Bucket(now)
        self.urgent_until = float("-inf")

    @property
    def rate(self) -> float:
        return self.link.rate

    def set_rate(self, rate: float, now: float) -> None:
        self.link.set_rate(rate, now)
        self.background.set_rate(rate * BACKGROUND_SHARE, now)

    def yielding(self, now: float) -> bool:
        """Whether background transfers give way now: an on-demand fill booked bytes lately."""
        return now < self.urgent_until

    def book(self, count: int, now: float, urgent: bool = False) -> Ticket:
        link = self.link.book(count, now)
        if urgent:
            ready = now + self.link.seconds_until(link, now)
            self.urgent_until = max(self.urgent_until, ready + URGENT_HOLD_SECONDS)
            return Ticket(link, None)
        if not self.yielding(now):
            self.background.settle(now)
        return Ticket(link, self.background.book(count, now))

    def charge(self, count: int, now: float) -> None:
        """Bytes that went without waiting (manifests): later bookings wait for them."""
        self.link.book(count, now)

    def seconds_until(self, ticket: Ticket, now: float) -> float:
        """How long the booking still waits: 0 once it may go."""
        wait = self.link.seconds_until(ticket.link, now)
        if ticket.background is None:
            return wait
        if not self.yielding(now):
            self.background.settle(now)
            return wait
        return max(wait, self.background.seconds_until(ticket.background, now))


class RateMeter:
    """Bytes per second over the last METER_SECONDS, in slots of a tenth of that."""

    def __init__(self) -> None:
        self.slot_seconds = METER_SECONDS / 10
        self.slots: deque[list] = deque()  # [slot number, bytes]

    def add(self, count: int, now: float) -> None:
        slot = int(now // self.slot_seconds)
        if self.slots and self.slots[-1][0] == slot:
            self.slots[-1][1] += count
        else:
            self.slots.append([slot, count])
        self._forget(now)

    def rate(self, now: float) -> float:
        self._forget(now)
        return sum(count for _, count in self.slots) / METER_SECONDS

    def _forget(self, now: float) -> None:
        oldest = int(now // self.slot_seconds) - 9
        while self.slots and self.slots[0][0] < oldest:
            self.slots.popleft()


class LinkBudget:
    """The budget every metered transfer over the parent link awaits. `clock` is the instance's (wall, for the
    windows' cron), `monotonic` paces."""

    def __init__(self, policy: BandwidthPolicy | None = None, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.clock, self.monotonic = clock, monotonic
        self.pacer = Pacer(monotonic())
        self.meter = RateMeter()
        self.bytes = {"received": 0, "sent": 0}
        self._limit = 0
        self._valid: tuple[datetime, datetime | None] | None = None  # (computed at, next change) of `_limit`
        self._changed = asyncio.Event()
        self.follow(policy or BandwidthPolicy())

    def follow(self, policy: BandwidthPolicy) -> None:
        """A new configuration: it applies at once, to the transfers in flight too."""
        self.policy, self._valid = policy, None
        self._refresh()

    @property
    def limit(self) -> int:
        """The limit in force now (0: unlimited)."""
        self._refresh()
        return self._limit

    def chunk_bytes(self) -> int | None:
        """How much a metered read or write moves at a time; None when the link is unlimited (as much as comes)."""
        limit = self.limit
        return min(max(int(limit * CHUNK_SECONDS), MIN_CHUNK_BYTES), MAX_CHUNK_BYTES) if limit else None

    async def spend(self, count: int, direction: str, urgent: bool = False) -> None:
        """`count` bytes moved (`direction`: "received" or "sent"); returns once the budget has room for them. An
        `urgent` transfer (a device waits for it) goes before background ones."""
        self._count(count, direction)
        if not count or not self.limit:
            return
        ticket = self.pacer.book(count, self.monotonic(), urgent)
        while (seconds := self.pacer.seconds_until(ticket, self.monotonic())) > 0:
            await wait_event(self._changed, min(seconds, REVISIT_SECONDS))
            if not self.limit:
                return

    def charge(self, count: int, direction: str) -> None:
        """`count` bytes that moved without waiting: later transfers wait for them."""
        self._count(count, direction)
        if self.limit:
            self.pacer.charge(count, self.monotonic())

    def document(self) -> dict:
        """The status document's figures (parent.bandwidth)."""
        return {"effective": self.limit, "currentBytesPerSecond": round(self.meter.rate(self.monotonic())),
                "bytesReceived": self.bytes["received"], "bytesSent": self.bytes["sent"]}

    def _count(self, count: int, direction: str) -> None:
        self.bytes[direction] += count
        self.meter.add(count, self.monotonic())

    def _refresh(self) -> None:
        """The limit again when the policy changed, a window opened or closed, or the clock went back."""
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        if self._valid is not None and self._valid[0] <= now and (self._valid[1] is None or now < self._valid[1]):
            return
        limit, change = self.policy.limit_at(now)
        self._valid = (now, change)
        if limit != self._limit:
            self._limit = limit
            self.pacer.set_rate(limit, self.monotonic())
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()  # every waiter looks again now


def narrow_receive_buffer(response, chunk: int) -> int:
    """The socket of a metered download (an aiohttp response) takes RECEIVE_BUFFER_CHUNKS chunks from now on, so the
    parent sends little ahead of the budget; returns `chunk`. The connection must not be reused for unmetered
    transfers afterwards (close it): its buffer stays small."""
    connection = response.connection
    sock = connection.transport.get_extra_info("socket") if connection and connection.transport else None
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, max(chunk * RECEIVE_BUFFER_CHUNKS, MIN_RECEIVE_BUFFER))
    return chunk


def bytes_arrived(response) -> int:
    """The body bytes of a download (an aiohttp response) that reached this host: read from its socket (aiohttp's
    count, buffered or not) and waiting in the socket (FIONREAD)."""
    connection = response.connection
    sock = connection.transport.get_extra_info("socket") if connection and connection.transport else None
    waiting = 0
    if sock is not None:
        try:
            waiting = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
        except OSError:  # closed meanwhile: nothing waits in it
            waiting = 0
    return response.content.total_bytes + waiting


async def budgeted_body(chunks: AsyncIterator[bytes], budget: LinkBudget, chunk: int = 1 << 20):
    """A blob's bytes as a body aiohttp cannot send twice. Given a file object, aiohttp sends a PUT again by itself
    when the link breaks under it; an upload's PUT appends to the parent's session, so the bytes that arrived the
    first time would arrive twice and the blob would fail its digest. Resuming from the offset the parent reports
    is our job. Each piece goes once the link's budget has room for it."""
    async with aclosing(chunks):
        async for data in chunks:
            view = memoryview(data)
            while view:
                size = budget.chunk_bytes() or chunk
                piece, view = view[:size], view[size:]
                await budget.spend(len(piece), "sent")
                yield piece
