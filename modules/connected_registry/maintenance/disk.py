"""A data volume that refused a write (SPEC 12): reported at once, then probed every few seconds; once a small
durable write succeeds the disk details clear and the sync retries at once. Reads go on meanwhile."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from connected_registry.instance import Instance
from connected_registry.storage import RegistryStore, StorageError

log = logging.getLogger("connected_registry")

DISK_RECHECK_SECONDS = 2.0
DISK_CODES = ("DISK_STORAGE_FULL", "DISK_PERMISSION_DENIED", "DISK_ERROR")


class DiskRecovery:
    def __init__(self, core: Instance, store: RegistryStore, on_recovered: Callable[[], None] = lambda: None) -> None:
        self.core, self.store, self.on_recovered = core, store, on_recovered
        self._watch: asyncio.Task | None = None

    def storage_failed(self, error: StorageError) -> None:
        """A write failed on the data volume: report it, and watch for the volume to recover."""
        self.core.status.set(error.code, error=error,
                             outlook="; reads go on, and writes resume by themselves once the volume can take them")
        if self._watch is None or self._watch.done():
            self._watch = self.core.tasks.spawn(self._until_writable(), "disk-recovery")

    async def _until_writable(self) -> None:
        while True:
            await asyncio.sleep(DISK_RECHECK_SECONDS)
            try:
                await self.store.check_writable()
            except StorageError:
                continue
            except Exception:  # noqa: BLE001 - keep watching; the log says why
                log.exception("checking the data volume failed")
                continue
            for code in DISK_CODES:
                self.core.status.clear(code)
            self.on_recovered()
            return
