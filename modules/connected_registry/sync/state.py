"""What the roles of one child's sync share (engine.py composes them): who this child is, where its sync
stands (read by the status document), and the parts every role uses, with the few reactions they have in
common: the parent answered, the sync works again, the parent failed, a sync round ended."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from connected_registry.durations import duration_seconds
from connected_registry.instance import Instance
from connected_registry.oci.platforms import Platform
from connected_registry.status import StatusBoard
from connected_registry.storage import RegistryStore
from connected_registry.sync.downstream import Downstream
from connected_registry.sync.operation import SyncOperation
from connected_registry.sync.parent_client import ParentClient, ParentError, ParentUnauthorized
from connected_registry.sync.registry_sync import RegistrySync
from connected_registry.sync.schedule import Window
from connected_registry.timefmt import utc_timestamp


@dataclass
class SyncIdentity:
    """Who this child is at its parent. Name, mode, scope and messageTtl are read from the instance core when they
    are needed, so a new configuration applies without copies (a new name or mode waits for a deactivation)."""

    core: Instance
    device_id: str
    version: str

    @property
    def name(self) -> str:
        return self.core.name

    @property
    def mode(self) -> str:
        return self.core.mode

    @property
    def instance_id(self) -> str:
        return self.core.instance_id

    @property
    def message_ttl(self) -> str:
        return self.core.settings.parent.syncProperties.messageTtl

    @property
    def repositories(self) -> list[str]:
        return list(self.core.repositories)

    @property
    def platforms(self) -> list[Platform] | None:
        return self.core.settings.wanted_platforms


@dataclass
class SyncState:
    activation: str = "Inactive"  # Active | Inactive, as the parent last said (kept across restarts)
    activated_since: str | None = None
    activation_confirmed: bool = False  # the parent said so since this start: a remembered Active is asked again
    parent_kind: str | None = None  # connected | plain
    online: bool = False
    syncing: bool = False
    last_sync_time: str | None = None
    cursor: int | None = None
    errors: int = 0
    syncs: int = 0
    window: Window | None = None  # the current or next sync window
    in_window: bool = True
    operation: SyncOperation | None = None  # the latest sync-now
    wake: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class SyncContext:
    store: RegistryStore
    parent: ParentClient
    identity: SyncIdentity
    status: StatusBoard
    downstream: Downstream
    state: SyncState = field(default_factory=SyncState)
    on_change: Callable[[], None] = lambda: None  # activation or reachability changed: the reporter looks
    backoff: float = 1.0  # the loop's wait after a failure; back to 1 s once the sync works again
    report_wanted: asyncio.Event = field(default_factory=asyncio.Event)  # tell the parent soon
    clock: Callable[[], float] = time.time  # the instance's: what the status says happened when
    registry: RegistrySync = field(init=False)  # the registry sync result (Azure's registrySyncResult)

    def __post_init__(self) -> None:
        self.registry = RegistrySync(self.store, self.clock, lambda: self.on_change(),
                                     lambda: duration_seconds(self.identity.message_ttl))

    def running_operation(self) -> SyncOperation | None:
        """The sync-now that is queued or running, if one is."""
        operation = self.state.operation
        return operation if operation is not None and operation.state in ("Queued", "Running") else None

    async def became_active(self) -> None:
        """The parent activated this child (a plain parent: took its token). Kept in the volume, so that a restart
        while no endpoint of the parent answers still shows Active; `since` stays while it is Active."""
        state = self.state
        state.activation_confirmed = True
        if state.activation == "Active" and state.activated_since is not None:
            return
        state.activation, state.activated_since = "Active", utc_timestamp(self.clock())
        await self.store.control.update_state(activated_since=state.activated_since)

    async def became_inactive(self) -> None:
        """The parent refused this child (deactivated, another instance Active, an incompatible mode)."""
        state = self.state
        state.activation, state.activated_since, state.activation_confirmed = "Inactive", None, False
        await self.store.control.update_state(activated_since=None)

    def parent_answered(self) -> None:
        if not self.state.online:
            self.state.online = True
            self.on_change()
        self.status.clear("PARENT_UNREACHABLE")
        self.status.clear("PARENT_AUTH_FAILED")

    def sync_works(self) -> None:
        """The feed or a reconcile worked: the next blip is retried at once, however bad it was before."""
        self.parent_answered()
        self.backoff = 1.0

    def parent_failed(self, error: ParentError) -> None:
        if self.state.online:
            self.on_change()
        self.state.online = False
        self.state.errors += 1
        if isinstance(error, ParentUnauthorized):
            self.status.set("PARENT_AUTH_FAILED", error=error)
        else:
            self.status.set("PARENT_UNREACHABLE", error=error)

    def round_ended(self) -> None:
        """A sync round ended; the first one since start is news for the parent's view, so report it soon."""
        if self.state.last_sync_time is None:
            self.report_wanted.set()
        self.state.last_sync_time = utc_timestamp(self.clock())
