"""Wires one instance together (storage, access, HTTP listener, background tasks) and owns its lifecycle."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from datetime import datetime, timezone

from aiohttp import web
from croniter import croniter

from connected_registry.api import create_app
from connected_registry.api.context import ApiContext
from connected_registry.auth import AnonymousAccess
from connected_registry.storage import RegistryStore
from connected_registry.storage.gc import collect_garbage

log = logging.getLogger("connected_registry")

DEFAULT_DATA_VOLUME = "/var/acr/data"
DEFAULT_GC_SCHEDULE = "0 5 * * *"


@dataclass
class InstanceOptions:
    data_dir: str
    host: str = "127.0.0.1"
    port: int = 8080
    name: str = "root"
    mode: str = "ReadWrite"
    gc_schedule: str | None = DEFAULT_GC_SCHEDULE


def default_data_dir() -> str:
    """ACR_REGISTRY_DATA_VOLUME, else /var/acr/data, else (not writable there) a per-user folder."""
    configured = os.environ.get("ACR_REGISTRY_DATA_VOLUME")
    if configured:
        return configured
    try:
        os.makedirs(DEFAULT_DATA_VOLUME, exist_ok=True)
        if os.access(DEFAULT_DATA_VOLUME, os.W_OK):
            return DEFAULT_DATA_VOLUME
    except OSError:
        pass
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "connected-registry")


class Runtime:
    def __init__(self, options: InstanceOptions) -> None:
        self.options = options
        self.store: RegistryStore | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task] = []
        self.port: int | None = None

    async def start(self) -> None:
        options = self.options
        self.store = RegistryStore(options.data_dir, origin=options.name)
        context = ApiContext(store=self.store, access=AnonymousAccess(), mode=options.mode)
        app = create_app(context)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, options.host, options.port, backlog=1024, reuse_address=True)
        await site.start()
        sockets = site._server.sockets if site._server else []  # noqa: SLF001 - aiohttp exposes no public port
        self.port = sockets[0].getsockname()[1] if sockets else options.port
        if options.gc_schedule:
            self._tasks.append(asyncio.create_task(self._gc_loop(options.gc_schedule), name="gc"))
        log.info(
            "connected registry %r (%s) serving http://%s:%d with data in %s",
            options.name,
            options.mode,
            options.host,
            self.port,
            options.data_dir,
        )

    async def _gc_loop(self, schedule: str) -> None:
        while True:
            now = datetime.now(timezone.utc)
            next_run = croniter(schedule, now).get_next(datetime)
            await asyncio.sleep((next_run - now).total_seconds())
            try:
                await collect_garbage(self.store, read_only=self.options.mode == "ReadOnly")
            except Exception:  # one failed run must not end the loop
                log.exception("garbage collection failed; it runs again at the next scheduled time")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self.store is not None:
            self.store.close()
        log.info("connected registry stopped")

    async def run_until_signalled(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
