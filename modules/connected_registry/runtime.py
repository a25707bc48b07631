"""The composition root (as distribution's NewApp): builds one instance from its parts around the instance core,
wires them to it, and owns the instance's lifecycle. It decides nothing else: every policy lives with its part."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from connected_registry.api import create_app
from connected_registry.api.context import ApiContext
from connected_registry.api.metrics import create_metrics_app
from connected_registry.api.requests import RequestRecorder, ServerLog
from connected_registry.audit import AuditTrail
from connected_registry.auth import OpenAccess, TokenAccess
from connected_registry.auth.signing import TokenSigner
from connected_registry.bundles.service import Bundles
from connected_registry.edge import wiring
from connected_registry.environment import with_environment
from connected_registry.instance import Instance
from connected_registry.maintenance.disk import DiskRecovery
from connected_registry.maintenance.gc import GarbageCollection
from connected_registry.maintenance.retention import Retention
from connected_registry.memory import map_large_buffers
from connected_registry.status_document import StatusDocument
from connected_registry.storage import RegistryStore, StorageError
from connected_registry.storage.coordination import EVENT_RETENTION, SYNC
from connected_registry.tls import ListenerCertificate, TrustBundle

if TYPE_CHECKING:
    from connected_registry.edge.reporter import Reporter
    from connected_registry.settings import DesiredProperties
    from connected_registry.sync.engine import SyncEngine
    from connected_registry.sync.ondemand import PullThrough
    from connected_registry.sync.wiring import ParentLink

log = logging.getLogger("connected_registry")

DEFAULT_DATA_VOLUME = "/var/acr/data"
IDLE_CONNECTION_SECONDS = 75.0  # a connection silent this long before a whole request arrived is closed


@dataclass
class InstanceOptions:
    data_dir: str
    host: str = "127.0.0.1"
    port: int = 8080
    config_path: str | None = None  # None: the embedded default, open to everyone
    metrics_listen: tuple[str, int] | None = None  # (host, port) of the /metrics listener; None: no metrics
    metadata: str | None = None  # `sqlite` or a postgresql:// DSN; None: ACR_REGISTRY_METADATA_DSN, else sqlite
    blob_store: str | None = None  # ACR_REGISTRY_BLOB_STORE / --blob-store; None: the filesystem, in data_dir


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


def _records_outbox(core: Instance) -> bool:
    return core.mode == "ReadWrite" and not core.is_root


class Runtime:
    """One instance: `async with Runtime(options) as runtime` starts it and stops it. It is the `InstanceControl`
    edge/ gets (status document, sync now, gc now, deactivate, spawn a task)."""

    def __init__(self, options: InstanceOptions, clock=time.time) -> None:
        self.options = options
        self.instance = Instance(clock)
        self.login_server: str | None = None  # ACR_REGISTRY_LOGIN_SERVER: only requests to that name are served
        self.store: RegistryStore | None = None
        self.context: ApiContext | None = None
        self.config_source = None  # the module twin inside IoT Edge, else the --config file, else None
        self.reporter: Reporter | None = None
        self.listener_certificate: ListenerCertificate | None = None
        self.trust_bundle: TrustBundle | None = None  # inside IoT Edge
        self.parent_link: ParentLink | None = None  # with a parent: the sync and the pull-through
        self.engine: SyncEngine | None = None  # with a parent
        self.pull_through: PullThrough | None = None  # with a parent: on-demand fills (SPEC 8)
        self.views: StatusDocument | None = None
        self.garbage_collection: GarbageCollection | None = None
        self.retention: Retention | None = None
        self.disk: DiskRecovery | None = None
        self.audit: AuditTrail | None = None  # logging.auditLogStatus: the records, in the data volume
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self.port: int | None = None
        self.metrics_port: int | None = None

    async def __aenter__(self) -> "Runtime":
        await self.start()
        return self

    async def __aexit__(self, *exception) -> None:
        await self.stop()

    # --- InstanceControl ----------------------------------------------------------------------------

    def status_document(self) -> dict:
        return self.views.document()

    def sync_now(self) -> str | None:
        return self.engine.sync_now() if self.engine is not None else None

    async def resync(self) -> str | None:
        return await self.engine.resync() if self.engine is not None else None

    def gc_now(self) -> str:
        return self.garbage_collection.run_now()

    async def deactivate(self) -> tuple[int, dict] | None:
        return await self.parent_link.deactivate() if self.parent_link else None

    def spawn(self, work, name: str) -> asyncio.Task:
        return self.instance.tasks.spawn(work, name)

    def spawn_once(self, lease: str, work, name: str) -> asyncio.Task:
        """The parts that work for the whole registry (storage/coordination.py: the sync and its outbox, the gc
        schedule, event retention, the reporter) run on the replica that holds their lease; alone, at once."""
        return self.instance.tasks.spawn(self.store.coordination.hold(lease, work), name)

    # --- start and stop -------------------------------------------------------------------------------

    async def start(self) -> None:
        core = self.instance
        self.config_source = wiring.config_source(self.options.config_path, core.status, core.apply)
        if self.config_source is not None:
            core.settings = with_environment(await self.config_source.load_initial())
        await self._open_store()
        core.instance_id = self.store.control.instance_id()
        self._build()
        self._follow_settings()
        await self._serve()
        await self.store.coordination.start(f"{self.options.host}:{self.port}", self.store.blob_store,
                                            on_events=self.store.after_change)
        await self._start_background_work()
        log.info("connected registry %r (%s%s) serving %s://%s:%d with data in %s; metrics %s", core.name, core.mode,
                 ", root" if core.is_root else "", "https" if self.listener_certificate.context else "http",
                 self.options.host, self.port, self.options.data_dir,
                 f"at http://{self.options.metrics_listen[0]}:{self.metrics_port}/metrics"
                 if self.metrics_port else "off")

    async def _open_store(self) -> None:
        core = self.instance
        try:
            self.store = RegistryStore(self.options.data_dir, origin=core.name, record_outbox=_records_outbox(core),
                                       clock=core.clock, metadata=self.options.metadata,
                                       blob_store=self.options.blob_store)
        except StorageError as error:  # the operator sees why in the twin, not only in the container's log
            await wiring.report_before_exit(core, self.config_source, error.code, error=error, outlook="")
            raise

    def _build(self) -> None:
        core, store = self.instance, self.store
        self.login_server = os.environ.get("ACR_REGISTRY_LOGIN_SERVER") or None
        self.listener_certificate = ListenerCertificate()
        self.garbage_collection = GarbageCollection(core, store)
        self.retention = Retention(core, store)
        self.disk = DiskRecovery(core, store, on_recovered=self._wake_sync)
        self.audit = AuditTrail(os.path.join(self.options.data_dir, "audit"), core.clock, registry=lambda: core.name,
                                enabled=lambda: core.settings is not None
                                and core.settings.logging.auditLogStatus == "Enabled")
        if not core.is_root:
            # Imported here: the sync (parent client, engine, pull-through) is about 2 MiB at idle that a root never
            # uses (measured: the embedded default's idle RSS).
            from connected_registry.sync.wiring import link_to_parent

            self.parent_link = link_to_parent(core, store, report=lambda: self.views.hierarchy(),
                                              on_storage_error=self.disk.storage_failed)
            self.engine, self.pull_through = self.parent_link.engine, self.parent_link.pull_through
        self.views = StatusDocument(core, store, self.garbage_collection, self.listener_certificate, self.engine,
                                    self.pull_through, self.config_source, self.login_server)
        self.context = ApiContext(store=store, access=self._access(), instance=core, login_server=self.login_server,
                                  status_document=self.views.document, hierarchy=self.views.hierarchy,
                                  on_sync_now=self._sync_now_operation, on_resync=self.resync,
                                  on_children_changed=self.engine.report_soon if self.engine else lambda: None,
                                  on_storage_error=self.disk.storage_failed, on_gc=self.garbage_collection.run_now,
                                  audit=self.audit, bundles=self._bundles())

    def _bundles(self) -> Bundles:
        """Offline bundles, signed with the token service's key; imported within the live scope and `platforms`."""
        core = self.instance
        return Bundles(self.store, self.options.data_dir, lambda: {"name": core.name, "instanceId": core.instance_id},
                       scope=lambda: ["*"] if core.is_root else list(core.repositories),
                       platforms=lambda: core.settings.wanted_platforms if core.settings else None,
                       mode=lambda: core.mode)

    def _access(self) -> OpenAccess | TokenAccess:
        """Tokens with a configuration; open to everyone without (the embedded default)."""
        core = self.instance
        if core.settings is None:
            return OpenAccess()
        try:
            signer = TokenSigner(self.options.data_dir)
        except ValueError as damaged:  # the token-signing key in the volume
            raise StorageError("DISK_ERROR", str(damaged)) from None
        return TokenAccess(signer, lambda: self.login_server or core.name, core.settings)

    def _follow_settings(self) -> None:
        """Every part that holds some of the settings follows them; then the first configuration applies."""
        core = self.instance
        core.settings_changed.subscribe(self._store_follows)
        if isinstance(self.context.access, TokenAccess):
            core.settings_changed.subscribe(lambda previous, settings: self.context.access.configure(settings))
        if self.parent_link is not None:
            core.settings_changed.subscribe(self.parent_link.follow_settings)
        core.settings_changed.subscribe(self.retention.follow_settings)
        core.settings_changed.subscribe(self.garbage_collection.follow_settings)
        if core.settings is not None:
            core.apply(core.settings)
        else:
            self.garbage_collection.follow_settings()

    def _store_follows(self, previous: "DesiredProperties | None", settings: "DesiredProperties") -> None:
        """What is written here carries the live name; a ReadWrite child records what goes up to its parent."""
        self.store.origin = self.instance.name
        self.store.record_outbox = _records_outbox(self.instance)

    async def _serve(self) -> None:
        options = self.options
        listener_ssl = self.listener_certificate.load()
        app = create_app(self.context)
        self._runner = web.AppRunner(app, access_log_class=RequestRecorder, access_log=log, logger=ServerLog(),
                                     handle_signals=False, shutdown_timeout=5, keepalive_timeout=IDLE_CONNECTION_SECONDS)
        self.port = await _listen(self._runner, options.host, options.port, ssl_context=listener_ssl)
        if options.metrics_listen is not None:
            self._metrics_runner = web.AppRunner(create_metrics_app(app), access_log=None, handle_signals=False,
                                                 shutdown_timeout=1, keepalive_timeout=IDLE_CONNECTION_SECONDS)
            self.metrics_port = await _listen(self._metrics_runner, *options.metrics_listen)

    async def _start_background_work(self) -> None:
        tasks = self.instance.tasks
        if self.listener_certificate.context is not None:
            tasks.spawn(self.listener_certificate.watch(), "certificate-watch")
        if self.config_source is not None:
            tasks.spawn(self.config_source.watch(), "config-watch")
        if self.engine is not None:
            await self._trust_edge_ca()
            self.spawn_once(SYNC, self.engine.run, "sync")
            self.context.content = self.pull_through  # the read routes now fill misses from the parent
        self.spawn_once(EVENT_RETENTION, self.retention.run, "event-retention")
        tasks.spawn(self.audit.run(), "audit-flush")
        if self.config_source is not None:
            self.reporter = wiring.start_reporting(self.instance, self, self.config_source)
            wiring.forward_audit(self, self.config_source, self.audit)

    async def _trust_edge_ca(self) -> None:
        """Inside IoT Edge the parent's certificate is checked with the edge CA's trust bundle, read again when it
        changes and when the parent's certificate is refused (the edge CA may have been renewed)."""
        if not wiring.trusts_edge_ca(self.config_source):
            return
        parent = self.engine.parent
        self.trust_bundle = TrustBundle(on_change=parent.set_ssl_context)
        parent.set_ssl_context(await self.trust_bundle.refresh())
        parent.on_certificate_error = self.trust_bundle.refresh_soon
        self.instance.tasks.spawn(self.trust_bundle.watch(), "trust-bundle")

    def _wake_sync(self) -> None:
        if self.engine is not None:
            self.engine.state.wake.set()

    def _sync_now_operation(self) -> str:
        """The control API's sync-now: a root has no parent to sync with, and answers with an operation id all
        the same."""
        return self.sync_now() or str(uuid.uuid4())

    async def stop(self) -> None:
        await self.instance.tasks.cancel_all()
        if self.parent_link is not None:
            await self.parent_link.close()
        if self.config_source is not None:
            await wiring.report_stopped(self.config_source, self.reporter)
            await self.config_source.close()
        if self.store is not None:  # children's long polls answer now rather than hold the shutdown
            await self.store.coordination.close()  # and the leases go at once to the other replicas
            self.store.closing = True
            self.store.after_change()
        for runner in (self._metrics_runner, self._runner):
            if runner is not None:
                await runner.cleanup()
        if self.store is not None:
            await self.store.files.aclose()
            self.store.close()
        if self.audit is not None:
            self.audit.close()
        log.info("connected registry stopped")

    async def run_until_signalled(self) -> None:
        """The process's life as `serve` runs it: start, run until SIGTERM or SIGINT, stop."""
        map_large_buffers()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        starting = asyncio.ensure_future(self.start())  # may wait long: for edgeHub, or for a twin that validates
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():
                log.info("stopping before the start completed")
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
                return
            starting.result()
            settle_garbage_collector()
            await stopping
        finally:
            stopping.cancel()
            await self.stop()


async def _listen(runner: web.AppRunner, host: str, port: int, ssl_context=None) -> int:
    """Serve `runner`'s application on host:port (0: any free port); returns the port."""
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True, ssl_context=ssl_context)
    await site.start()
    sockets = site._server.sockets if site._server else []  # noqa: SLF001 - aiohttp exposes no public port
    return sockets[0].getsockname()[1] if sockets else port


def settle_garbage_collector() -> None:
    """Once started, the objects made so far (modules, settings, routes) live as long as the process: take
    them out of the cyclic collector's scans, and let it run less often. A fill streams a blob through a few
    objects per block, and the collector rescanning the whole heap was ~17% of a layer's CPU (perf, during
    benchmarks/pull_through.py); with this the pull through two cold layers went from 84-86 to 101-105 MB/s."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
