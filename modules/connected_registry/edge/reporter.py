"""When and what to report (SPEC 4). IoT Hub meters and throttles twin updates, so:

- at once: activation, the connection state, statusDetails, a newly applied configuration and what follows from it
  (parent.syncProperties, sync.nextWindowStart/End, appliedDesiredVersion);
- `Syncing` only once a transfer has lasted 30 s (until then it is reported as Online);
- counters (`sync.*`, lastSyncTime, lastActivityTime, uploadSessions, the link's bytes and bytes/s) at most once per
  `reportInterval`.

There is one status document (status_document.py, read through `InstanceControl`); the reporter only decides when
to send, and sends the difference from what it sent last as a JSON merge patch (null deletes). It looks at the
document every second and at once when poked (a configuration was applied, a status detail changed).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Awaitable, Callable

from connected_registry.waits import wait_event

log = logging.getLogger("connected_registry.report")

SYNCING_AFTER_SECONDS = 30.0
POLL_SECONDS = 1.0
COALESCE_SECONDS = 0.02
MAX_BACKOFF_SECONDS = 60.0
_COUNTERS = (("lastActivityTime",), ("lastSyncTime",), ("parent", "syncProperties", "lastSyncTime"),
             ("sync", "pendingUploads"), ("sync", "rejectedUploads"), ("sync", "repositories"),
             ("sync", "bytesDownloaded"), ("sync", "bytesUploaded"), ("sync", "cursor"), ("sync", "runs"),
             ("sync", "errors"), ("sync", "operation"), ("cache",), ("garbageCollection",), ("uploadSessions",),
             ("parent", "bandwidth", "currentBytesPerSecond"), ("parent", "bandwidth", "bytesReceived"),
             ("parent", "bandwidth", "bytesSent"))


def merge_diff(old: dict, new: dict) -> dict:
    """The JSON merge patch that turns `old` into `new` (objects recursively, anything else replaced)."""
    patch: dict = {}
    for key, value in new.items():
        if key not in old:
            if value is not None:
                patch[key] = value
        elif isinstance(value, dict) and isinstance(old[key], dict):
            inner = merge_diff(old[key], value)
            if inner:
                patch[key] = inner
        elif value != old[key]:
            patch[key] = value
    for key in old:
        if key not in new and old[key] is not None:
            patch[key] = None
    return patch


def _get(document: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(document, dict) or key not in document:
            return None, False
        document = document[key]
    return document, True


def _set(document: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        if not isinstance(document.get(key), dict):
            return
        document = document[key]
    document[path[-1]] = value


class Reporter:
    def __init__(self, document: Callable[[], dict], write: Callable[[dict, dict], Awaitable[None]],
                 report_interval: Callable[[], float], clock: Callable[[], float] = time.monotonic) -> None:
        self.document = document
        self.write = write  # (merge patch since the last write, the whole document)
        self.report_interval = report_interval
        self.clock = clock
        self._sent: dict | None = None
        self._counters_sent_at = float("-inf")
        self._syncing_since: float | None = None
        self._poked = asyncio.Event()
        self.writes = 0

    @property
    def last_sent(self) -> dict | None:
        return self._sent

    def poke(self) -> None:
        """Something that is reported at once changed: look now rather than within a second."""
        self._poked.set()

    def due(self) -> tuple[dict, dict, bool]:
        """(patch, document, counters included) of what is to be reported now; the patch is empty when nothing is."""
        now = self.clock()
        document = copy.deepcopy(self.document())
        if document.get("connectionState") == "Syncing":
            self._syncing_since = self._syncing_since if self._syncing_since is not None else now
            if now - self._syncing_since < SYNCING_AFTER_SECONDS:
                document["connectionState"] = "Online"
        else:
            self._syncing_since = None
        counters_due = now - self._counters_sent_at >= self.report_interval()
        if not counters_due and self._sent is not None:
            for path in _COUNTERS:
                value, present = _get(self._sent, path)
                if present:
                    _set(document, path, value)
        return merge_diff(self._sent or {}, document), document, counters_due

    async def report_once(self) -> bool:
        patch, document, counters_due = self.due()
        if not patch:
            return False
        await self.write(patch, document)
        self._sent = document
        self.writes += 1
        if counters_due:
            self._counters_sent_at = self.clock()
        log.debug("reported %s", patch)
        return True

    async def run(self) -> None:
        backoff = 1.0
        while True:
            self._poked.clear()
            try:
                await self.report_once()
                wait, backoff = POLL_SECONDS, 1.0
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - reported again at the next try
                log.warning("could not report the status (%s: %s); trying again in %.0f s",
                            type(error).__name__, error, backoff)
                wait, backoff = backoff, min(backoff * 2, MAX_BACKOFF_SECONDS)
            if await wait_event(self._poked, wait):
                await asyncio.sleep(COALESCE_SECONDS)  # a burst of changes (a patch, its consequences) is one update
