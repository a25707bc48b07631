"""The one status document (SPEC 4) that the twin, the control API, the command line and the parent read, and the
hierarchy view of SPEC 11 (this instance with every child's last report below it). Both are built from the parts
each time they are asked for, so they never hold a copy that could drift."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from connected_registry import __version__
from connected_registry.durations import duration_seconds
from connected_registry.instance import Instance
from connected_registry.storage import RegistryStore
from connected_registry.timefmt import utc_iso, utc_timestamp

if TYPE_CHECKING:
    from connected_registry.maintenance.gc import GarbageCollection
    from connected_registry.sync.engine import SyncEngine
    from connected_registry.sync.ondemand import PullThrough
    from connected_registry.tls import ListenerCertificate

DEFAULT_REPORT_INTERVAL = 300  # seconds, the embedded default's (SPEC 3's PT5M)
STALE_AFTER_INTERVALS = 3  # a child silent this many report intervals is shown Offline (stale)


@dataclass
class StatusDocument:
    """What is read to build the documents; the sync parts are None on a root."""

    core: Instance
    store: RegistryStore
    gc: "GarbageCollection"
    listener: "ListenerCertificate"
    engine: "SyncEngine | None" = None
    pull_through: "PullThrough | None" = None
    config_source: Any = None  # FileConfigSource | TwinConfigSource: the applied desired $version
    login_server: str | None = None

    def document(self) -> dict:
        """The reported properties (SPEC 4), as served at /acr/connected/v1/status."""
        details = self.core.status.details()
        state = self.engine.state if self.engine else None
        document = {
            "version": __version__,
            "name": self.core.name,
            "mode": self.core.mode,
            "activation": self._activation(),
            "connectionState": _connection_state(details, state),
            "parent": None,
            "lastSyncTime": state.last_sync_time if state else None,
            "registrySyncResult": self.engine.registry_sync.document() if self.engine else None,
            "lastActivityTime": utc_timestamp(self.core.clock()),
            "sync": self._sync(),
            "loginServer": {"host": self.login_server,
                            "tls": {"status": "Enabled" if self.listener.context else "Disabled"}},
            "statusDetails": details,
            "cache": self.pull_through.document() if self.pull_through else None,
            "garbageCollection": {"lastRun": self.gc.last_run},
            "uploadSessions": {"open": self.store.uploads.open_sessions(),
                               "maxPerToken": self.store.uploads.sessions_per_token,
                               "maxPerRepository": self.store.uploads.sessions_per_repository},
            "appliedDesiredVersion": self.config_source.applied_version if self.config_source else None,
            "bundles": self._bundles(),
        }
        if self.engine is not None:
            document["parent"] = self._parent()
        return document

    def _bundles(self) -> dict:
        """The last offline bundle imported and exported (issue 17): when, what, how many bytes, from or for whom."""
        state = self.store.control.state()
        return {"lastImport": state.last_bundle_import, "lastExport": state.last_bundle_export}

    def _activation(self) -> dict:
        if self.core.is_root:
            return {"status": "Active", "instanceId": self.core.instance_id}
        state = self.engine.state
        return {"status": state.activation, "instanceId": self.core.instance_id, "since": state.activated_since}

    def _sync(self) -> dict:
        engine, outbox = self.engine, self.store.outbox()
        state = engine.state if engine else None
        window = None
        if engine is not None and engine.schedule.sync_window is not None:  # continuous: always in one
            window = engine.schedule.next_window(datetime.fromtimestamp(self.core.clock(), timezone.utc))
        return {
            "pendingUploads": sum(1 for entry in outbox if entry["state"] == "pending"),
            "rejectedUploads": sum(1 for entry in outbox if entry["state"] == "parked"),
            "repositories": len(self.store.list_repositories(None, None)),
            "bytesDownloaded": engine.downstream.bytes_downloaded if engine else 0,
            "bytesUploaded": engine.upstream.bytes_uploaded if engine else 0,
            "platforms": engine.downstream.left_out.document(self.core.settings.platforms) if engine else None,
            "cursor": state.cursor if state else None,
            "runs": state.syncs if state else 0,
            "errors": state.errors if state else 0,
            "operation": vars(engine.operation).copy() if engine and engine.operation else None,
            "nextWindowStart": utc_iso(window.start) if window else None,
            "nextWindowEnd": utc_iso(window.end) if window and window.end else None,
        }

    def _parent(self) -> dict:
        sync_properties = self.core.settings.parent.syncProperties.model_dump()
        sync_properties["lastSyncTime"] = self.engine.state.last_sync_time
        bandwidth = self.core.settings.parent.bandwidth.model_dump()  # as configured, and the figures of the link
        bandwidth.update(self.engine.parent.budget.document())
        endpoints = self.engine.parent.endpoints  # the first one, and the one in use
        return {"endpoint": endpoints.first, **endpoints.document(), "kind": self.engine.state.parent_kind,
                "syncProperties": sync_properties, "bandwidth": bandwidth}

    def hierarchy(self) -> dict:
        """This instance and, below it, every child's last report with its age (SPEC 11)."""
        settings = self.core.settings
        interval = duration_seconds(settings.reportInterval) if settings else DEFAULT_REPORT_INTERVAL
        now = datetime.fromtimestamp(self.core.clock(), timezone.utc)
        node = dict(self.document(), children=[])
        for child in self.store.control.children():
            node["children"].append(_child_entry(child, now, interval))
        return node


def _connection_state(details: list[dict], state) -> str:
    if any(detail["severity"] == "Error" for detail in details):
        return "Unhealthy"
    if state is not None and (not state.online or not state.in_window):
        return "Offline"
    if state is not None and state.syncing:
        return "Syncing"
    return "Online"


def _child_entry(child, now: datetime, interval: float) -> dict:
    """One child as the hierarchy shows it: its activation, its last report, and Offline once that is stale."""
    report = dict(child.report or {})
    entry = {"name": child.name, "mode": child.mode, "activation": {"status": child.status,
             "instanceId": child.instance_id, "deviceId": child.device_id, "since": child.activated},
             "reportedAt": child.reported, "report": report, "children": report.pop("children", [])}
    state = report.get("connectionState", "Offline")
    if child.reported:
        age = (now - datetime.fromisoformat(child.reported.replace("Z", "+00:00"))).total_seconds()
        if age > STALE_AFTER_INTERVALS * interval:
            state = f"Offline (stale since {child.reported})"
    entry["connectionState"] = state if child.status == "Active" else "Offline"
    return entry
