"""The metadata store, as one interface: what the registry, the uploads, garbage collection, the cache budget and
the control state ask of it. SQLite implements it (`storage/sqlite/`), and PostgreSQL for replicas sharing one
database (`storage/postgres/`); nothing above `storage/` knows which.

Reads run on the event loop. A write is a function given a `MetadataWrites` and run as one transaction, in turn
with every other write, and durable when `write` returns; file work a commit depends on (a blob renamed into
place, a manifest's file) runs inside that function, so nothing interleaves with it.
"""

from __future__ import annotations

from typing import Callable, Iterable, Protocol, TypeVar

from connected_registry.oci.manifest import ParsedManifest
from connected_registry.storage.coordination import Coordination
from connected_registry.storage.records import Child, ControlState, EventRecord, ManifestEntry, Referrer, TransferKey
from connected_registry.timefmt import Clock

T = TypeVar("T")


class MetadataReads(Protocol):
    def check_readable(self) -> None:
        """Raise while the metadata cannot be read (readiness)."""

    # --- blobs and manifests -----------------------------------------------------------------------

    def blob_size(self, repository: str, digest: str) -> int | None: ...

    def links_blob(self, repository: str, digest: str) -> bool:
        """Whether the blob is linked into `repository`."""

    def holds_blob(self, digest: str) -> bool:
        """Whether the blob is stored, in any repository."""

    def repositories_with_blob(self, digest: str) -> list[str]: ...

    def references_blob(self, repository: str, digest: str) -> bool:
        """Whether a manifest of `repository` references the blob."""

    def manifest_by_digest(self, repository: str, digest: str) -> ManifestEntry | None: ...

    def manifest_by_tag(self, repository: str, tag: str) -> ManifestEntry | None: ...

    def tag_digest(self, repository: str, tag: str) -> str | None: ...

    def manifest_digests(self, repository: str) -> list[str]: ...

    def incomplete(self, repository: str, digest: str) -> bool:
        """Whether a blob or child manifest the manifest references (at any depth) is missing in `repository`;
        children left out by design (`set_left_out`), and what is under them, are not missing."""

    def left_out_children(self, repository: str, digest: str) -> set[str]:
        """The child manifests of an index that are absent from `repository` by design (the `platforms` setting)."""

    def left_out_by(self, repository: str, digest: str) -> str | None:
        """An index of `repository` that leaves the manifest out by design, if one does."""

    def repository_exists(self, name: str) -> bool: ...

    def list_tags(self, repository: str, limit: int | None, last: str | None) -> list[str]: ...

    def list_repositories(self, limit: int | None, last: str | None) -> list[str]: ...

    def referrers(self, repository: str, subject: str, artifact_type: str | None) -> list[Referrer]: ...

    # --- events and outbox ---------------------------------------------------------------------------

    def has_events_after(self, seq: int) -> bool: ...

    def events(self, after: int, limit: int) -> list[dict]: ...

    def event_head(self) -> int:
        """The seq of the newest event kept, 0 when there is none."""

    def last_event_before(self, time: str) -> int | None:
        """The seq of the newest event older than an ISO 8601 time."""

    def outbox(self) -> list[dict]: ...

    def undelivered_tag(self, repository: str, tag: str) -> bool:
        """Whether an outbox entry names the tag."""

    # --- control state and children ------------------------------------------------------------------

    def control_state(self) -> ControlState: ...

    def transfer_session(self, key: TransferKey) -> str | None: ...

    def child(self, name: str) -> Child | None: ...

    def children(self) -> list[Child]: ...

    # --- uploads, the on-demand list, garbage collection ---------------------------------------------

    def upload_repository(self, upload_id: str) -> str | None: ...

    def upload_ids(self) -> list[str]: ...

    def upload_count(self) -> int: ...

    def client_uploads_of(self, owner: str) -> list[str]:
        """The open sessions a client's token started (the sync's own have no owner)."""

    def client_uploads_in(self, repository: str) -> list[str]:
        """The open sessions clients started in `repository`."""

    def on_demand_bytes(self) -> int: ...

    def is_on_demand(self, digest: str) -> bool: ...

    def on_demand_by_age(self) -> list[tuple[str, int]]:
        """(digest, size) of the stored on-demand blobs, least recently used first."""

    def unreferenced_blobs(self, used_before: float, limit: int) -> list[tuple[str, int]]:
        """(digest, size) of blobs no manifest references (nor are they manifests) and unused since `used_before`."""

    def tagged_manifests(self) -> list[tuple[str, str]]:
        """(repository, digest) of every tagged manifest."""

    def manifest_followers(self, repository: str, digest: str) -> list[tuple[str, str]]:
        """(repository, digest) of the manifests kept with this one: its child manifests and its referrers."""

    def manifests_created_before(self, cutoff: float) -> list[tuple[str, str]]: ...


class MetadataWrites(MetadataReads, Protocol):
    """Inside one write transaction: the changes commit together, or none does."""

    def add_repository(self, name: str, now: float) -> None: ...

    def add_blob(self, digest: str, size: int, origin: str, now: float) -> bool:
        """False when the blob was stored already."""

    def touch_blobs(self, digests: Iterable[str], now: float) -> None:
        """Used now: garbage collection gives them another grace period."""

    def link_blob(self, repository: str, digest: str, now: float) -> None: ...

    def unlink_blob(self, repository: str, digest: str) -> bool:
        """False when the blob was not linked into `repository`."""

    def remove_blob(self, digest: str) -> None:
        """The blob is gone from every repository (and from the on-demand list); its file is the caller's."""

    def add_manifest(self, repository: str, digest: str, size: int, parsed: ParsedManifest, origin: str,
                     now: float) -> bool:
        """The manifest and what it references; False when it was in `repository` already."""

    def set_left_out(self, repository: str, digest: str, children: Iterable[str]) -> None:
        """These child manifests of the index, and only these, are absent by design."""

    def remove_manifest(self, repository: str, digest: str) -> None:
        """The manifest, its tags and its references."""

    def set_tag(self, repository: str, tag: str, digest: str, now: float) -> None: ...

    def remove_tag(self, repository: str, tag: str) -> None: ...

    def add_event(self, event: EventRecord) -> None: ...

    def remove_events_through(self, seq: int) -> int: ...

    def add_outbox_entry(self, repository: str, operation: str, tag: str | None, digest: str, created: str) -> None: ...

    def remove_outbox_entry(self, entry_id: int) -> bool: ...

    def park_outbox_entry(self, entry_id: int, error: str) -> None: ...

    def retry_outbox_entry(self, entry_id: int) -> bool:
        """A parked entry is pending again; False when there is no such parked entry."""

    def save_control_state(self, state: ControlState) -> None:
        """The stored record becomes `state` (only the fields that differ are written)."""

    def remember_transfer_session(self, key: TransferKey, session: str) -> None: ...

    def forget_transfer_session(self, key: TransferKey) -> None: ...

    def save_activation(self, name: str, document: dict, now: str) -> None:
        """The child is Active with the identity `document` names (SPEC 6); `activated` is kept while it stays so."""

    def save_deactivation(self, name: str, revoked: list[str]) -> None:
        """The child is Inactive, and these instance ids of it are refused from now on."""

    def record_child_report(self, name: str, report: dict, now: str) -> None: ...

    def add_upload(self, upload_id: str, repository: str, started: float, owner: str | None) -> None: ...

    def remove_upload(self, upload_id: str) -> None: ...

    def list_on_demand(self, digest: str, size: int, now: float) -> None: ...

    def unlist_on_demand(self, digests: Iterable[str]) -> None:
        """Something synced or pushed references them: permanent from now on."""

    def touch_on_demand(self, digest: str, used: float) -> None: ...

    def unlist_gone_on_demand(self) -> None:
        """Entries whose blob is gone (by garbage collection or a delete)."""


class MetadataStore(MetadataReads, Protocol):
    # Other processes (replicas) write it too: nothing read from it may be kept in memory past the request.
    shared: bool

    async def write(self, work: Callable[[MetadataWrites], T]) -> T:
        """Run `work` as one transaction in turn with the other writes, without stalling the event loop."""

    def write_now(self, work: Callable[[MetadataWrites], T]) -> T:
        """`write` on the calling thread: at start-up, in commands without an event loop, and inside `serialized`."""

    async def serialized(self, work: Callable[[MetadataReads], T]) -> T:
        """Run `work` in turn with the writes, never during one, reading what they committed: file work that must
        not interleave with a commit (garbage collection removing a file a commit is installing)."""

    def coordination(self, clock: Clock) -> Coordination:
        """How this store's replicas share the work (storage/coordination.py): one replica on a store of its own."""

    def close(self) -> None: ...
