"""Wires one instance together (storage, access, HTTP listener, configuration, background tasks)
and owns its lifecycle."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from aiohttp import web
from croniter import croniter

from connected_registry.api import create_app
from connected_registry.api.context import ApiContext
from connected_registry.api.requests import RequestRecorder, ServerLog
from connected_registry.auth import OpenAccess, TokenAccess
from connected_registry.status import StatusBoard
from connected_registry.storage import RegistryStore, StorageError
from connected_registry.storage.gc import collect_garbage
from connected_registry.timefmt import utc_timestamp

if TYPE_CHECKING:  # pydantic and the JWT machinery load only with a configuration (idle memory)
    from connected_registry.edge.file_source import FileConfigSource
    from connected_registry.edge.reporter import Reporter
    from connected_registry.edge.twin_source import TwinConfigSource
    from connected_registry.settings import DesiredProperties

log = logging.getLogger("connected_registry")

DEFAULT_DATA_VOLUME = "/var/acr/data"
DEFAULT_NAME = "connected-registry"
DEFAULT_GC_SCHEDULE = "0 5 * * *"
REMOVAL_GRACE_SECONDS = 7 * 24 * 3600
REFUSED_BY_PARENT = ("DEACTIVATED", "ALREADY_ACTIVE", "MODE_INCOMPATIBLE")  # neither syncs nor fills on demand
DISK_RECHECK_SECONDS = 2.0
IDLE_CONNECTION_SECONDS = 75.0  # a connection silent this long before a whole request arrived is closed
DISK_CODES = ("DISK_STORAGE_FULL", "DISK_PERMISSION_DENIED", "DISK_ERROR")
LOG_LEVELS = {"Debug": logging.DEBUG, "Information": logging.INFO, "Warning": logging.WARNING,
              "Error": logging.ERROR, "None": logging.CRITICAL + 10}


@dataclass
class InstanceOptions:
    data_dir: str
    host: str = "127.0.0.1"
    port: int = 8080
    config_path: str | None = None  # None: the embedded default, open to everyone
    metrics_listen: tuple[str, int] | None = None  # (host, port) of the /metrics listener; None: no metrics


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


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _iso(moment) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


class Runtime:
    def __init__(self, options: InstanceOptions, clock=time.time) -> None:
        self.options = options
        self.clock = clock  # injected: message TTLs (and later windows) are tested without waiting
        self.status = StatusBoard(clock)
        self.store: RegistryStore | None = None
        self.context: ApiContext | None = None
        self.settings: DesiredProperties | None = None  # None: the embedded default (open, root)
        self.config_source: FileConfigSource | TwinConfigSource | None = None
        self.reporter: Reporter | None = None
        self.trust_bundle = None  # edge TrustBundle inside IoT Edge
        self.listener_certificate = None
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task] = []
        self._gc_task: asyncio.Task | None = None
        self._disk_watch: asyncio.Task | None = None
        self.last_gc: dict | None = None  # the latest garbage collection, scheduled or asked for (status document)
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.engine = None  # SyncEngine when there is a parent
        self.pull_through = None  # PullThrough (on-demand fills, SPEC 8) when there is a parent

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
        from connected_registry.edge import wiring  # the module twin inside IoT Edge, else --config, else None

        self.config_source = wiring.config_source(options.config_path, self.status, self.apply_settings)
        if self.config_source is not None:
            from connected_registry.auth.signing import TokenSigner, load_or_create_key, revocations_path

            from connected_registry.environment import with_environment

            self.settings = with_environment(await self.config_source.load_initial())
        try:
            self.store = RegistryStore(options.data_dir, origin=self.name,
                                       record_outbox=self.mode == "ReadWrite" and not self.is_root, clock=self.clock)
        except StorageError as error:  # the operator sees why in the twin, not only in the container's log
            await wiring.report_before_exit(self, "Disk", error.code, str(error))
            raise
        if self.settings is not None:
            signer = TokenSigner(load_or_create_key(options.data_dir), revocations=revocations_path(options.data_dir))
            access = TokenAccess(signer, login_server or self.name, self.settings)
        else:
            access = OpenAccess()
        self.context = ApiContext(store=self.store, access=access, login_server=login_server, name=self.name,
                                  status_document=self.status_document, hierarchy=self.hierarchy,
                                  on_sync_now=self.sync_now, on_children_changed=self._children_changed,
                                  on_storage_error=self.storage_failed, on_gc=self.gc_now)
        self.instance_id = self.store.control.instance_id()
        if self.settings is not None:
            self.apply_settings(self.settings)
        else:
            self._schedule_gc(True, DEFAULT_GC_SCHEDULE)
        from connected_registry.tls import ListenerCertificate

        self.listener_certificate = ListenerCertificate()
        listener_ssl = self.listener_certificate.load()
        app = create_app(self.context)
        self._runner = web.AppRunner(app, access_log_class=RequestRecorder, access_log=log, logger=ServerLog(),
                                     handle_signals=False, shutdown_timeout=5, keepalive_timeout=IDLE_CONNECTION_SECONDS)
        self.port = await _listen(self._runner, options.host, options.port, ssl_context=listener_ssl)
        if options.metrics_listen is not None:
            from connected_registry.api.metrics import create_metrics_app

            self._metrics_runner = web.AppRunner(create_metrics_app(app), access_log=None, handle_signals=False,
                                                 shutdown_timeout=1, keepalive_timeout=IDLE_CONNECTION_SECONDS)
            self.metrics_port = await _listen(self._metrics_runner, *options.metrics_listen)
        if listener_ssl is not None:
            self._tasks.append(asyncio.create_task(self.listener_certificate.watch(), name="certificate-watch"))
        if self.config_source:
            self._tasks.append(asyncio.create_task(self.config_source.watch(), name="config-watch"))
        if not self.is_root:
            from connected_registry.sync.ondemand import PullThrough

            self.engine = self._sync_engine(await wiring.parent_trust(self))
            self._tasks.append(asyncio.create_task(self.engine.run(), name="sync"))
            self.pull_through = PullThrough(self.store, self.engine.downstream, self.settings,
                                            in_window=lambda: self.engine.state.in_window,
                                            refused=lambda: any(self.status.has(code) for code in REFUSED_BY_PARENT))
            self.context.pull_through = self.pull_through
        self._tasks.append(asyncio.create_task(self._prune_events_forever(), name="event-retention"))
        if self.config_source is not None:
            wiring.start_reporting(self)
        log.info("connected registry %r (%s%s) serving %s://%s:%d with data in %s; metrics %s", self.name, self.mode,
                 ", root" if self.is_root else "", "https" if listener_ssl else "http", options.host, self.port,
                 options.data_dir, f"at http://{options.metrics_listen[0]}:{self.metrics_port}/metrics"
                 if self.metrics_port else "off")

    def _sync_engine(self, ssl_context=None):
        from connected_registry import __version__
        from connected_registry.environment import (device_id, parse_connection_string, resolve_parent_endpoint,
                                                    sync_token_password)
        from connected_registry.settings import duration_seconds
        from connected_registry.sync.engine import SyncEngine, SyncIdentity
        from connected_registry.sync.parent_client import ParentClient
        from connected_registry.sync.schedule import SyncSchedule

        parent = self.settings.parent
        connection = parse_connection_string(os.environ.get("ACR_REGISTRY_CONNECTION_STRING"))
        endpoint = resolve_parent_endpoint(parent.endpoint, connection.get("ParentEndpointProtocol"))
        token_name = parent.syncToken.name or connection.get("SyncTokenName")
        client = ParentClient(endpoint, token_name, sync_token_password(connection),
                              connect_timeout=duration_seconds(parent.connectTimeout),
                              first_byte_timeout=duration_seconds(parent.firstByteTimeout), ssl_context=ssl_context)
        identity = SyncIdentity(self.name, self.mode, self.instance_id, device_id(), __version__,
                                parent.syncProperties.messageTtl, list(self.settings.repositories))
        return SyncEngine(self.store, client, identity, self.status, kind=parent.kind, report=self.hierarchy,
                          report_interval=duration_seconds(self.settings.reportInterval),
                          schedule=SyncSchedule.from_settings(parent.syncProperties), clock=self.clock,
                          on_storage_error=self.storage_failed)

    async def prune_events(self) -> int:
        """Keep events for the longest messageTtl any active child sent (P2D without children), SPEC 7.4."""
        from connected_registry.durations import duration_seconds

        ttls = [duration_seconds(child.message_ttl) for child in self.store.control.children()
                if child.status == "Active" and child.message_ttl]
        keep = max(ttls, default=2 * 24 * 3600)
        return await self.store.control.prune_events(utc_timestamp(self.clock() - keep))

    async def _prune_events_forever(self) -> None:
        while True:
            try:
                await self.prune_events()
                await self.remove_out_of_scope()
            except Exception:  # retried next time
                log.exception("event retention or scope clean-up failed")
            await asyncio.sleep(600)

    async def remove_out_of_scope(self) -> list[str]:
        """Repositories that left a ReadOnly child's scope are hidden at once and deleted after seven days
        (SPEC 7.2); back in scope before then, they are kept. Returns what was deleted."""
        from connected_registry.auth.permissions import repository_in_scope

        if self.is_root or self.mode != "ReadOnly":
            self.status.clear("REPOSITORY_PENDING_REMOVAL")
            return []
        now = self.clock()
        pending = dict(self.store.control.state().pending_removal)
        removed = []
        for repository in self.store.list_repositories(None, None):
            if repository_in_scope(list(self.settings.repositories), repository):
                pending.pop(repository, None)
                continue
            digests = self.store.manifest_digests(repository)
            if not digests:
                pending.pop(repository, None)
                continue
            since = pending.setdefault(repository, now)
            if now - since >= REMOVAL_GRACE_SECONDS:
                for digest in digests:
                    if self.store.get_manifest(repository, digest) is not None:
                        await self.store.delete_manifest(repository, digest, from_parent=True)
                pending.pop(repository)
                removed.append(repository)
        await self.store.control.update_state(pending_removal=pending)
        if pending:
            when = ", ".join(f"{name} on {utc_timestamp(since + REMOVAL_GRACE_SECONDS)[:10]}"
                             for name, since in sorted(pending.items()))
            self.status.set("Sync", "Warning", "REPOSITORY_PENDING_REMOVAL",
                            f"repositories no longer in `repositories` are hidden and will be deleted: {when}; "
                            "add them back to keep them")
        else:
            self.status.clear("REPOSITORY_PENDING_REMOVAL")
        return removed

    def _hold_back_identity_changes(self, settings: "DesiredProperties") -> "DesiredProperties":
        """A change of mode or name while Active waits for a deactivation (SPEC 3); the rest applies."""
        if self.engine is None or self.engine.state.activation != "Active" or self.settings is None:
            self.status.clear("CHANGE_NEEDS_DEACTIVATION")
            return settings
        held = {key: getattr(self.settings, key) for key in ("mode", "name")
                if getattr(settings, key) != getattr(self.settings, key)}
        if not held:
            self.status.clear("CHANGE_NEEDS_DEACTIVATION")
            return settings
        wanted = ", ".join(f"{key} {getattr(settings, key)!r}" for key in held)
        self.status.set("Config", "Warning", "CHANGE_NEEDS_DEACTIVATION",
                        f"{wanted} not applied while {self.name} is Active: deactivate it at the parent "
                        f"(connected-registry deactivate {self.name} --registry <parent>), then restart it")
        return settings.model_copy(update=held)

    def storage_failed(self, error: StorageError) -> None:
        """A write failed on the data volume (SPEC 12): report it, and watch for the volume to recover."""
        self.status.set("Disk", "Error", error.code,
                        f"{error}; reads go on, and writes resume by themselves once the volume can take them")
        if self._disk_watch is None or self._disk_watch.done():
            self._disk_watch = asyncio.get_running_loop().create_task(self._watch_disk_recovery(), name="disk-recovery")

    async def _watch_disk_recovery(self) -> None:
        """Probe the volume every few seconds; once a small durable write succeeds, the disk detail clears
        and the sync retries at once."""
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
                self.status.clear(code)
            if self.engine is not None:
                self.engine.state.wake.set()
            return

    def _children_changed(self) -> None:
        if self.engine is not None:
            self.engine.report_soon()

    def sync_now(self) -> str:
        import uuid

        if self.engine is not None:
            return self.engine.sync_now()
        return str(uuid.uuid4())  # a root has no parent to sync with

    def gc_now(self) -> str:
        """Garbage collection at once (SPEC 11); joins one that is running. Returns its operation id."""
        if self.last_gc is None or self.last_gc["state"] != "Running":
            self._tasks.append(asyncio.get_running_loop().create_task(self._collect_garbage(), name="gc-now"))
        return self.last_gc["operationId"]

    def _collect_garbage(self):
        """Starts a run now (visible at once in the status document); returns the coroutine that does it."""
        import uuid

        run = self.last_gc = {"operationId": str(uuid.uuid4()), "state": "Running",
                              "startedAt": utc_timestamp(self.clock())}
        return self._run_gc(run)

    async def _run_gc(self, run: dict) -> None:
        try:
            report = await collect_garbage(self.store, read_only=self.mode == "ReadOnly")
            run.update(state="Succeeded", **{_camel(key): value for key, value in vars(report).items()})
        except Exception as error:  # one failed run must not end the schedule
            log.exception("garbage collection failed; it runs again at the next scheduled time")
            run.update(state="Failed", error=str(error))
        finally:
            run["finishedAt"] = utc_timestamp(self.clock())

    def status_document(self) -> dict:
        """The reported properties (SPEC 4), as served at /acr/connected/v1/status."""
        from connected_registry import __version__

        details = self.status.details()
        engine_state = self.engine.state if self.engine else None
        if self.is_root:
            activation = {"status": "Active", "instanceId": self.instance_id}
        else:
            activation = {"status": engine_state.activation, "instanceId": self.instance_id,
                          "since": engine_state.activated_since}
        if any(detail["severity"] == "Error" for detail in details):
            connection_state = "Unhealthy"
        elif engine_state is not None and (not engine_state.online or not engine_state.in_window):
            connection_state = "Offline"
        elif engine_state is not None and engine_state.syncing:
            connection_state = "Syncing"
        else:
            connection_state = "Online"
        window = None
        if self.engine is not None and self.engine.schedule.sync_window is not None:  # continuous: always in one
            window = self.engine.schedule.next_window(datetime.fromtimestamp(self.clock(), timezone.utc))
        document = {
            "version": __version__,
            "name": self.name,
            "mode": self.mode,
            "activation": activation,
            "connectionState": connection_state,
            "parent": None,
            "lastSyncTime": engine_state.last_sync_time if engine_state else None,
            "lastActivityTime": utc_timestamp(self.clock()),
            "sync": {
                "pendingUploads": sum(1 for entry in self.store.outbox() if entry["state"] == "pending"),
                "rejectedUploads": sum(1 for entry in self.store.outbox() if entry["state"] == "parked"),
                "repositories": len(self.store.list_repositories(None, None)),
                "bytesDownloaded": self.engine.downstream.bytes_downloaded if self.engine else 0,
                "bytesUploaded": self.engine.upstream.bytes_uploaded if self.engine else 0,
                "cursor": engine_state.cursor if engine_state else None,
                "runs": engine_state.syncs if engine_state else 0,
                "errors": engine_state.errors if engine_state else 0,
                "operation": vars(self.engine.operation).copy() if self.engine and self.engine.operation else None,
                "nextWindowStart": _iso(window.start) if window else None,
                "nextWindowEnd": _iso(window.end) if window else None,
            },
            "loginServer": {"host": self.context.login_server if self.context else None,
                            "tls": {"status": "Enabled" if self.listener_certificate and self.listener_certificate.context
                                    else "Disabled"}},
            "statusDetails": details,
            "cache": self.pull_through.document() if self.pull_through else None,
            "garbageCollection": {"lastRun": self.last_gc},
            "uploadSessions": {"open": self.store.uploads.open_sessions(),
                               "maxPerToken": self.store.uploads.sessions_per_token,
                               "maxPerRepository": self.store.uploads.sessions_per_repository},
            "appliedDesiredVersion": self.config_source.applied_version if self.config_source else None,
        }
        if self.engine is not None:
            sync_properties = self.settings.parent.syncProperties.model_dump()
            sync_properties["lastSyncTime"] = engine_state.last_sync_time
            document["parent"] = {"endpoint": self.engine.parent.endpoint, "kind": engine_state.parent_kind,
                                  "syncProperties": sync_properties}
        return document

    def hierarchy(self) -> dict:
        """This instance and, below it, every child's last report with its age (SPEC 11)."""
        from datetime import datetime, timezone

        from connected_registry.settings import duration_seconds

        interval = duration_seconds(self.settings.reportInterval) if self.settings else 300
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        node = dict(self.status_document(), children=[])
        for child in self.store.control.children():
            report = dict(child.report or {})
            entry = {"name": child.name, "mode": child.mode, "activation": {"status": child.status,
                     "instanceId": child.instance_id, "deviceId": child.device_id, "since": child.activated},
                     "reportedAt": child.reported, "report": report, "children": report.pop("children", [])}
            state = report.get("connectionState", "Offline")
            if child.reported:
                age = (now - datetime.fromisoformat(child.reported.replace("Z", "+00:00"))).total_seconds()
                if age > 3 * interval:
                    state = f"Offline (stale since {child.reported})"
            entry["connectionState"] = state if child.status == "Active" else "Offline"
            node["children"].append(entry)
        return node

    def apply_settings(self, settings: "DesiredProperties") -> None:
        """Apply a validated configuration to every part that holds some of it, without a restart."""
        from connected_registry.environment import with_environment

        settings = self._hold_back_identity_changes(with_environment(settings))
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
            context.name = self.name
        if self.engine is not None and settings.parent is not None:
            from connected_registry.settings import duration_seconds
            from connected_registry.sync.schedule import SyncSchedule

            self.engine.set_schedule(SyncSchedule.from_settings(settings.parent.syncProperties))
            self.engine.parent.set_timeouts(duration_seconds(settings.parent.connectTimeout),
                                            duration_seconds(settings.parent.firstByteTimeout))
            self.engine.set_repositories(list(settings.repositories))
        if self.pull_through is not None and settings.parent is not None:
            self.pull_through.configure(settings)
        if self.store is not None and self.context is not None:
            self._tasks.append(asyncio.get_running_loop().create_task(self.remove_out_of_scope(), name="scope-clean-up"))
        self._schedule_gc(settings.garbageCollection.enabled, settings.garbageCollection.schedule)

    def _schedule_gc(self, enabled: bool, schedule: str) -> None:
        if self._gc_task is not None:
            self._gc_task.cancel()
            self._gc_task = None
        if enabled and self.store is not None:
            self._gc_task = asyncio.get_running_loop().create_task(self._gc_loop(schedule), name="gc")

    async def _gc_loop(self, schedule: str) -> None:
        while True:
            now = datetime.fromtimestamp(self.clock(), timezone.utc)
            next_run = croniter(schedule, now).get_next(datetime)
            await asyncio.sleep((next_run - now).total_seconds())
            await self._collect_garbage()

    async def stop(self) -> None:
        tasks = self._tasks + [task for task in (self._gc_task, self._disk_watch) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.pull_through is not None:
            await self.pull_through.close()
        if self.engine is not None:
            await self.engine.parent.close()
        if self.config_source is not None:
            from connected_registry.edge import wiring

            await wiring.report_stopped(self)
            await self.config_source.close()
        if self.store is not None:  # children's long polls answer now rather than hold the shutdown
            self.store.closing = True
            self.store.after_change()
        for runner in (self._metrics_runner, self._runner):
            if runner is not None:
                await runner.cleanup()
        if self.store is not None:
            self.store.close()
        log.info("connected registry stopped")

    async def run_until_signalled(self) -> None:
        """The process's life as `serve` runs it: start, run until SIGTERM or SIGINT, stop."""
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
