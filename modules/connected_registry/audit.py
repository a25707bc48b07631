"""The audit trail (`logging.auditLogStatus`): one JSON line per login, pull, push, delete, refusal and control
action, appended to segment files in the data volume's `audit/` folder (api/audit.py decides what a request adds).

The segments are also the queue of what IoT Hub has not had yet: inside IoT Edge, edge/audit_output.py reads the
records after the last one edgeHub took (the `sent` mark beside them), oldest first, and sends them on. Both are
bounded by the same rule: a segment is closed at `segment_bytes` (its name is its first record's number) and the
oldest beyond `max_segments` is removed, sent or not, so a module offline for very long loses its oldest records
first. A record holds names, addresses and outcomes only, never a password or a token."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from connected_registry.timefmt import Clock, utc_timestamp

log = logging.getLogger("connected_registry.audit")

SEGMENT_BYTES = 4 << 20
MAX_SEGMENTS = 8  # with SEGMENT_BYTES: at most 32 MiB of records in the volume
SENT_MARK = "sent"
_SUFFIX = ".jsonl"
_TAIL_BYTES = 64 << 10  # a record is a few hundred bytes (api/audit.py bounds its fields): a tail holds many
_WARN_EVERY_SECONDS = 60.0

# The record, field by field in the order written. README's table is printed from it
# (`python -m connected_registry.docs audit`), and every record has exactly these keys (null where they do not apply).
FIELDS: dict[str, str] = {
    "seq": "the record's number, one more than the record before it, across restarts (a receiver drops a repeat by it)",
    "time": "when the answer was sent: ISO 8601, UTC, milliseconds, from the instance's clock",
    "registry": "the instance's name",
    "action": "`login` (a password or refresh token checked), `pull` (a manifest GET), `push` (a manifest PUT), "
              "`delete` (a manifest or blob DELETE), `control` (a POST or DELETE under /acr/connected/v1), or "
              "`access` (any other request: recorded only when refused)",
    "result": "`success`; `failure` (a login that did not hold, or a request that failed: a manifest unknown or "
              "invalid); `refused` (401, 403, 405, 409, 413 or 429: a right, the mode, a limit or a throttle said no)",
    "status": "the HTTP status the request was answered with (a login's record has its request's)",
    "code": "the error code the answer carried (see Error codes and status details), or null",
    "method": "the HTTP method",
    "path": "the request's path, without its query",
    "token": "the token's name: the caller's, or the one a login offered (even one that does not exist); null for "
             "anonymous, and for a login whose header could not be read",
    "client": "the client's address: the peer's, or behind `trustedProxies` the one X-Forwarded-For names",
    "repository": "the repository the request named, or null",
    "reference": "the tag or digest the request named, or null",
    "digest": "the manifest's digest (pull, push), the digest a delete named, or null",
    "requestId": "the request's id: as in the log lines and the X-Request-Id header",
}


@dataclass(frozen=True)
class Batch:
    """Records read back, oldest first: their lines (without newlines) and the numbers of the first and the last."""

    lines: list[bytes]
    first: int
    last: int

    def json_array(self) -> bytes:
        return b"[" + b",".join(self.lines) + b"]"


class AuditTrail:
    """Appends records while `enabled()` says so (the live setting), and reads them back for edgeHub."""

    def __init__(self, directory: str, clock: Clock, enabled: Callable[[], bool], registry: Callable[[], str],
                 segment_bytes: int = SEGMENT_BYTES, max_segments: int = MAX_SEGMENTS) -> None:
        self.directory = directory
        self.clock, self.enabled, self.registry = clock, enabled, registry
        self.segment_bytes, self.max_segments = segment_bytes, max(2, max_segments)
        self.appended = asyncio.Event()  # set by every record: the edgeHub forwarder waits on it
        self._fd: int | None = None  # the segment being written; opened at the first record (Disabled: no file)
        self._size = 0
        self._last: int | None = None  # the last record's number, read from the volume at the first record
        self._unsynced = asyncio.Event()  # written since the last fsync
        self._dropped = 0
        self._warned_at: float | None = None
        self._cursor: tuple[str, int, int] | None = None  # (segment, offset, seq) where the last read stopped

    # --- writing ----------------------------------------------------------------------------------------

    def record(self, **fields: object) -> None:
        """One record of FIELDS (the trail adds seq, time and registry). A volume that cannot take it loses the
        record, never the request: the log says so, once a minute."""
        if not self.enabled():
            return
        try:
            self._append(fields)
        except OSError as error:
            self._dropped += 1
            self._warn(error)

    def _append(self, fields: dict) -> None:
        if self._fd is None:
            self._open_segment()
        number = self._last + 1
        record = {"seq": number, "time": utc_timestamp(self.clock()), "registry": self.registry()}
        record.update((key, fields.get(key)) for key in FIELDS if key not in record)
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        try:
            if os.write(self._fd, line) != len(line):
                raise OSError(errno.ENOSPC, "short write to the audit log")
        except OSError:
            _quietly(os.ftruncate, self._fd, self._size)  # no torn line for the next record to follow
            raise
        self._last, self._size = number, self._size + len(line)
        self.appended.set()
        self._unsynced.set()
        if self._size >= self.segment_bytes:
            self._close_segment()

    def _open_segment(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        segments = self._segments()
        if self._last is None:
            self._last = max(self._recover(segments), self.sent_mark())
        if segments and os.path.getsize(segments[-1][1]) < self.segment_bytes:
            path = segments[-1][1]
        else:
            path = os.path.join(self.directory, f"{self._last + 1:016d}{_SUFFIX}")
            segments.append((self._last + 1, path))
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size
        for _, old in segments[:-self.max_segments]:
            _quietly(os.unlink, old)

    def _recover(self, segments: list[tuple[int, str]]) -> int:
        """The last record's number in the volume; a line a crash cut short is cut off."""
        if not segments:
            return 0
        first, path = segments[-1]
        with open(path, "r+b") as file:
            size = file.seek(0, os.SEEK_END)
            start = max(0, size - _TAIL_BYTES)
            file.seek(start)
            tail = file.read()
            end = tail.rfind(b"\n") + 1
            if start + end < size:
                file.truncate(start + end)
        complete = tail[:end].splitlines()
        return _number(complete[-1]) if complete else first - 1

    def _close_segment(self) -> None:
        fd, self._fd = self._fd, None
        _quietly(os.fsync, fd)
        os.close(fd)
        self._unsynced.clear()

    def _warn(self, error: OSError) -> None:
        now = self.clock()
        if self._warned_at is None or now - self._warned_at >= _WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning("the audit log in %s cannot be written (%s): %d record(s) lost so far; free space on the data "
                        "volume", self.directory, error.strerror or error, self._dropped)

    async def run(self) -> None:
        """Records reach the disk within a second (a power cut loses at most that), off the event loop; an idle
        trail never wakes."""
        while True:
            await self._unsynced.wait()
            await asyncio.sleep(1.0)
            self._unsynced.clear()
            if self._fd is not None:
                await asyncio.to_thread(_fsync_and_close, os.dup(self._fd))

    def close(self) -> None:
        if self._fd is not None:
            self._close_segment()

    # --- reading back (from a thread: this is file I/O) ---------------------------------------------------------

    def read_after(self, number: int, max_bytes: int) -> Batch | None:
        """The records after record `number`, oldest first, as many as a JSON array of `max_bytes` holds (at least
        one); None when there are none yet."""
        lines: list[bytes] = []
        size, last = 1, number
        for path, offset in self._unread(number):
            try:
                with open(path, "rb") as file:
                    file.seek(offset)
                    for raw in file:
                        if not raw.endswith(b"\n"):
                            break  # being written
                        offset += len(raw)
                        seq = _number(raw)
                        if seq <= last:
                            continue
                        if lines and size + len(raw) > max_bytes:
                            return Batch(lines, _number(lines[0]), last)
                        lines.append(raw[:-1])
                        size, last = size + len(raw), seq
                        self._cursor = (path, offset, seq)
            except FileNotFoundError:
                continue  # removed as the oldest meanwhile
        return Batch(lines, _number(lines[0]), last) if lines else None

    def _unread(self, number: int) -> Iterator[tuple[str, int]]:
        """(segment, offset) pairs that may hold records after `number`: from where the last read stopped, or from
        the segment it falls in."""
        segments = self._segments()
        start = 0
        for index, (first, _) in enumerate(segments):
            if first <= number + 1:
                start = index
        for index, (_, path) in enumerate(segments[start:]):
            cursor = self._cursor
            resume = index == 0 and cursor is not None and cursor[0] == path and cursor[2] == number
            yield path, cursor[1] if resume else 0

    def _segments(self) -> list[tuple[int, str]]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted((int(name[:-len(_SUFFIX)]), os.path.join(self.directory, name))
                      for name in names if name.endswith(_SUFFIX) and name[:-len(_SUFFIX)].isdigit())

    def sent_mark(self) -> int:
        """The number of the last record edgeHub took (0: none)."""
        try:
            with open(os.path.join(self.directory, SENT_MARK), encoding="ascii") as file:
                return int(file.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def mark_sent(self, number: int) -> None:
        """Kept across restarts; not fsynced: a mark lost to a power cut sends a few records again (by `seq`, a
        receiver knows them)."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        path = os.path.join(self.directory, SENT_MARK)
        temporary = path + ".tmp"
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="ascii") as file:
            file.write(f"{number}\n")
        os.replace(temporary, path)


def _number(line: bytes) -> int:
    """A record's `seq`: the first field, so read without parsing the whole line."""
    if line.startswith(b'{"seq":'):
        end = line.find(b",", 7)
        if end > 7 and line[7:end].isdigit():
            return int(line[7:end])
    return int(json.loads(line)["seq"])


def _fsync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _quietly(operation: Callable, *arguments: object) -> None:
    try:
        operation(*arguments)
    except OSError:
        pass
