"""Wires one instance together (storage, access, HTTP listener, configuration, background tasks)
and owns its lifecycle."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from aiohttp import web
from croniter import croniter

from connected_registry.api import create_app
from connected_registry.api.context import ApiContext
from connected_registry.auth import OpenAccess, TokenAccess
from connected_registry.status import StatusBoard
from connected_registry.storage import RegistryStore
from connected_registry.storage.gc import collect_garbage

if TYPE_CHECKING:  # pydantic and the JWT machinery load only with a configuration (idle memory)
    from connected_registry.edge.file_source import FileConfigSource
    from connected_registry.settings import DesiredProperties

log = logging.getLogger("connected_registry")

DEFAULT_DATA_VOLUME = "/var/acr/data"
DEFAULT_NAME = "connected-registry"
DEFAULT_GC_SCHEDULE = "0 5 * * *"
LOG_LEVELS = {"Debug": logging.DEBUG, "Information": logging.INFO, "Warning": logging.WARNING,
              "Error": logging.ERROR, "None": logging.CRITICAL + 10}


@dataclass
class InstanceOptions:
    data_dir: str
    host: str = "127.0.0.1"
    port: int = 8080
    config_path: str | None = None  # None: the embedded default, open to everyone


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
        self.status = StatusBoard()
        self.store: RegistryStore | None = None
        self.context: ApiContext | None = None
        self.settings: DesiredProperties | None = None  # None: the embedded default (open, root)
        self.config_source: FileConfigSource | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task] = []
        self._gc_task: asyncio.Task | None = None
        self.port: int | None = None

    @property
    def name(self) -> str:
        return (self.settings.name if self.settings else None) or DEFAULT_NAME

    @property
    def is_root(self) -> bool:
        return self.settings is None or self.settings.parent is None or self.settings.parent.endpoint is None

    @property
    def mode(self) -> str:
        return "ReadWrite" if self.is_root else self.settings.mode

    async def start(self) -> None:
        options = self.options
        login_server = os.environ.get("ACR_REGISTRY_LOGIN_SERVER") or None
        if options.config_path:
            from connected_registry.auth.signing import TokenSigner, load_or_create_key
            from connected_registry.edge.file_source import FileConfigSource

            self.config_source = FileConfigSource(options.config_path, self.status, self.apply_settings)
            self.settings = self.config_source.load_initial()
        self.store = RegistryStore(options.data_dir, origin=self.name, record_outbox=self.mode == "ReadWrite" and not self.is_root)
        if self.settings is not None:
            signer = TokenSigner(load_or_create_key(options.data_dir))
            access = TokenAccess(signer, login_server or self.name, self.settings)
        else:
            access = OpenAccess()
        self.context = ApiContext(store=self.store, access=access, login_server=login_server)
        if self.settings is not None:
            self.apply_settings(self.settings)
        else:
            self._schedule_gc(True, DEFAULT_GC_SCHEDULE)
        self._runner = web.AppRunner(create_app(self.context), access_log=None, handle_signals=False, shutdown_timeout=5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, options.host, options.port, backlog=1024, reuse_address=True)
        await site.start()
        sockets = site._server.sockets if site._server else []  # noqa: SLF001 - aiohttp exposes no public port
        self.port = sockets[0].getsockname()[1] if sockets else options.port
        if self.config_source:
            self._tasks.append(asyncio.create_task(self.config_source.watch(), name="config-watch"))
        log.info("connected registry %r (%s%s) serving http://%s:%d with data in %s", self.name, self.mode,
                 ", root" if self.is_root else "", options.host, self.port, options.data_dir)

    def apply_settings(self, settings: "DesiredProperties") -> None:
        """Apply a validated configuration to every part that holds some of it, without a restart."""
        self.settings = settings
        logging.getLogger("connected_registry").setLevel(LOG_LEVELS[settings.logging.logLevel])
        if self.is_root and "mode" in settings.model_fields_set and settings.mode != "ReadWrite":
            self.status.set("Config", "Warning", "MODE_IGNORED_ON_ROOT",
                            "mode is ignored on a root registry (no parent): a root is always ReadWrite")
        else:
            self.status.clear("MODE_IGNORED_ON_ROOT")
        context = self.context
        if context is not None:
            if isinstance(context.access, TokenAccess):
                context.access.configure(settings)
            context.mode = self.mode
            context.is_root = self.is_root
            context.repositories = tuple(settings.repositories)
        self._schedule_gc(settings.garbageCollection.enabled, settings.garbageCollection.schedule)

    def _schedule_gc(self, enabled: bool, schedule: str) -> None:
        if self._gc_task is not None:
            self._gc_task.cancel()
            self._gc_task = None
        if enabled and self.store is not None:
            self._gc_task = asyncio.get_running_loop().create_task(self._gc_loop(schedule), name="gc")

    async def _gc_loop(self, schedule: str) -> None:
        while True:
            now = datetime.now(timezone.utc)
            next_run = croniter(schedule, now).get_next(datetime)
            await asyncio.sleep((next_run - now).total_seconds())
            try:
                await collect_garbage(self.store, read_only=self.mode == "ReadOnly")
            except Exception:  # one failed run must not end the loop
                log.exception("garbage collection failed; it runs again at the next scheduled time")

    async def stop(self) -> None:
        tasks = self._tasks + ([self._gc_task] if self._gc_task else [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
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
