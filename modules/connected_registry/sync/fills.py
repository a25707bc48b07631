"""A blob on its way from the parent, readable while it arrives (SPEC 8).

One transfer per digest (Downstream keeps the registry): it writes into a download session's file, and
every reader, first or late, reads that growing file from its own position, waking on each block that
lands. A store without local files (Azure Blob Storage: blocks are committed seconds apart and cannot be read
while they land) gets a `Spool` beside the session: an unnamed local file the readers read instead. The last
byte is held back until the digest is verified, so a reader of a corrupt transfer gets a short body (a broken
transfer) and never a silent success. (Verified bytes go out while the store makes
them durable: the client need not wait for each layer's fsync in turn.)
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Callable

HELD_BACK = 1  # bytes a reader gets only once the digest is verified


class BlobFill:
    def __init__(self, repository: str, digest: str) -> None:
        self.repository, self.digest = repository, digest
        self.size: int | None = None  # known once the parent answered (its Content-Length)
        self.available = 0  # bytes on disk in the partial file
        self.opened = False
        self.verified = False  # the digest matched: the held-back bytes may go out
        self.done = False
        self.error: BaseException | None = None
        self.task: asyncio.Task | None = None
        self.waiters = 0  # the transfer stops (and resumes later with Range) when the last one leaves early
        self.urgent = False  # a device waits for it (on demand): it takes the link's budget before the sync
        self._fd: int | None = None
        self._changed = asyncio.Event()

    # --- the transfer's side -----------------------------------------------------------------------

    def start_reading(self, source: str | int | None, offset: int, size: int | None) -> None:
        """The parent answered: bytes go to the file at `source` (a path, or a spool's descriptor), `offset` of them
        already there (a resumed transfer). None: nothing readable while they arrive, readers wait for the store."""
        if source is not None:  # readers keep reading the file after it is renamed into place or closed
            self._fd = os.dup(source) if isinstance(source, int) else os.open(source, os.O_RDONLY)
        self.size, self.available, self.opened = size, offset, True
        self._notify()

    def progress(self, offset: int) -> None:
        self.available = offset
        self._notify()

    def mark_verified(self) -> None:
        """The digest matched: readers may have every byte (storing it durably goes on meanwhile)."""
        self.verified = True
        self._notify()

    def finish(self, error: BaseException | None) -> None:
        self.done, self.error, self.opened = True, error, True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # --- the readers' side ----------------------------------------------------------------------

    def leave(self) -> None:
        self.waiters -= 1
        if self.waiters <= 0 and not self.verified and not self.done and self.task is not None:
            self.task.cancel()

    async def wait_opened(self) -> None:
        while not self.opened:
            await self._changed.wait()

    async def wait_done(self) -> None:
        while not self.done:
            await self._changed.wait()

    def reader(self) -> "FillReader | None":
        """A reader of the growing file, or None when there is nothing to stream from: the transfer has
        ended (the blob is in the store, or it failed) or the parent did not say the size."""
        if self._fd is None or self.size is None or self.done:
            return None
        return FillReader(self, os.dup(self._fd))

    def _readable(self) -> int:
        if self.verified:
            return self.size
        return min(self.available, self.size - HELD_BACK)


class FillReader:
    """One client's view of a fill: `file` and the windows of it that may be sent; `close()` (also at the
    end of `windows`) lets go of the transfer."""

    def __init__(self, fill: BlobFill, fd: int) -> None:
        self.fill = fill
        self.file = os.fdopen(fd, "rb", buffering=0)  # for sendfile; every read names its offset
        self.size: int = fill.size
        self.on_close: Callable[[BlobFill], None] | None = None
        self.failure: str | None = None  # set when the bytes cannot be completed: the client's transfer breaks

    def close(self) -> None:
        if self.file.closed:
            return
        self.file.close()
        self.fill.leave()
        if self.on_close is not None:
            self.on_close(self.fill)

    async def windows(self, start: int, end: int) -> AsyncIterator[tuple[int, int]]:
        """(offset, length) of the bytes in [start, end) as they land, in order. Ends early, with `failure`
        set, when the transfer fails or the bytes turn out wrong."""
        fill, position = self.fill, start
        try:
            while position < end:
                changed = fill._changed
                if fill.done and fill.error is not None and not fill.verified:
                    self.failure = str(fill.error) or type(fill.error).__name__
                    return
                limit = min(fill._readable(), end)
                if limit > position:
                    yield position, limit - position
                    position = limit
                    continue
                await changed.wait()
        finally:
            self.close()


class Spool:
    """A local copy of the bytes of a fill whose store has no local file, written as they arrive, at the offsets
    they belong to (a resumed transfer writes the same bytes again). Unnamed: nothing is left after a crash, and
    the readers' descriptors keep it until the last one closes."""

    def __init__(self, directory: str, fill: BlobFill) -> None:
        self.file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - closed by `close`
        self.fill = fill
        self.position = 0

    @property
    def fd(self) -> int:
        return self.file.fileno()

    async def write(self, chunk: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(None, _write_at, self.fd, chunk, self.position)
        self.position += len(chunk)
        self.fill.progress(max(self.position, self.fill.available))

    def close(self) -> None:
        self.file.close()


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
