"""The records the metadata store reads and writes (`metadata.MetadataStore`), whatever holds them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Union


@dataclass(frozen=True)
class ManifestEntry:
    """A manifest as the metadata knows it (its body is the blob file of its digest)."""

    digest: str
    media_type: str
    size: int
    subject: str | None


@dataclass(frozen=True)
class Referrer:
    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    annotations: dict | None


@dataclass(frozen=True)
class EventRecord:
    """One change of the event log (SPEC 7.1); `time` is ISO 8601 (`timefmt.utc_timestamp`)."""

    type: str  # TagSet | TagDeleted | ManifestPut | ManifestDeleted
    repository: str
    tag: str | None
    digest: str
    media_type: str | None
    size: int | None
    subject: str | None
    origin: str
    time: str


@dataclass
class Child:
    name: str
    status: str  # Active | Inactive
    instance_id: str | None
    device_id: str | None
    mode: str | None
    version: str | None
    message_ttl: str | None
    repositories: list[str]
    revoked: list[str]
    activated: str | None
    report: dict | None
    reported: str | None


@dataclass(frozen=True)
class ControlState:
    """What this instance keeps about itself across restarts. Read whole, changed field by field
    (`ControlStore.update_state`), so two parts changing different fields never undo each other."""

    instance_id: str | None = None  # created at first start (SPEC 6); a reset gives a new one
    sync_cursor: int | None = None  # the last event of the parent's feed applied here
    download_failures: Mapping[str, str] = field(default_factory=dict)  # repository -> why its content failed
    pending_removal: Mapping[str, float] = field(default_factory=dict)  # repository -> when it left the scope
    events_pruned_through: int = 0  # events up to this seq are gone (a cursor before it gets 410)
    disk_checked: str | None = None  # when a probe last found the volume writable
    activated_since: str | None = None  # since when the parent has this instance Active; None: not Active there
    registry_sync: Mapping[str, Any] = field(default_factory=dict)  # the last registry sync (sync/registry_sync.py)
    parent_key: str | None = None  # the parent's bundle-signing public key (PEM), learned at activation
    bundle_cursors: Mapping[str, int] = field(default_factory=dict)  # exporter instanceId -> cursor imported
    last_bundle_import: Mapping[str, object] | None = None  # what the status document shows (bundles/)
    last_bundle_export: Mapping[str, object] | None = None
    child_keys: Mapping[str, str] = field(default_factory=dict)  # child name -> its bundle key (PEM), at activation


@dataclass(frozen=True)
class ResumableDownload:
    """A blob coming from the parent: the upload session here it is written into, resumed with Range."""

    digest: str


@dataclass(frozen=True)
class ResumableUpload:
    """A blob going to `parent`: the upload location there, resumed from the bytes the parent holds."""

    parent: str
    repository: str
    digest: str


TransferKey = Union[ResumableDownload, ResumableUpload]
