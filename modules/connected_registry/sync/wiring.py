"""How an instance with a parent puts its sync together: the parent client (from the settings and the environment),
the engine, the pull-through over the engine's downstream, each reading the instance core; and how they follow a
new configuration. A root never loads this package."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from connected_registry import __version__
from connected_registry.durations import duration_seconds
from connected_registry.environment import (device_id, parse_connection_string, resolve_parent_endpoint,
                                            sync_token_password)
from connected_registry.instance import Instance
from connected_registry.storage import RegistryStore, StorageError
from connected_registry.storage.content import LocalContent
from connected_registry.sync.at_parent import deactivate_at_parent, endpoint_switched, refused_by_parent
from connected_registry.sync.bandwidth import BandwidthPolicy, LinkBudget
from connected_registry.sync.engine import SyncEngine, SyncIdentity
from connected_registry.sync.ondemand import PullThrough
from connected_registry.sync.parent_client import ParentClient
from connected_registry.sync.schedule import SyncSchedule


@dataclass
class ParentLink:
    """The sync parts of one instance, built once at its start."""

    core: Instance
    engine: SyncEngine
    pull_through: PullThrough

    def follow_settings(self, previous, settings) -> None:
        """A new schedule, timeouts, byte budget, report interval and scope apply at once; pull-through settings too."""
        if settings.parent is None:
            return
        parent, engine = settings.parent, self.engine
        engine.set_schedule(SyncSchedule.from_settings(parent.syncProperties))
        engine.parent.set_timeouts(duration_seconds(parent.connectTimeout), duration_seconds(parent.firstByteTimeout))
        engine.parent.budget.follow(BandwidthPolicy.from_settings(parent.bandwidth))
        engine.parent.endpoints.configure(_alternates(parent), duration_seconds(parent.failbackInterval))
        engine.reporting.interval = duration_seconds(settings.reportInterval)
        if previous is not None and (previous.repositories, previous.platforms) != (settings.repositories,
                                                                                    settings.platforms):
            engine.scope_changed()  # a platform added arrives with the reconcile this starts
        self.pull_through.configure(settings)

    async def deactivate(self) -> tuple[int, dict]:
        return await deactivate_at_parent(self.engine.parent, self.core.name)

    async def close(self) -> None:
        await self.pull_through.close()
        await self.engine.parent.close()


def link_to_parent(core: Instance, store: RegistryStore, report: Callable[[], dict],
                   on_storage_error: Callable[[StorageError], None]) -> ParentLink:
    """The sync of an instance whose settings name a parent; it runs once `engine.run()` is started."""
    parent = _parent_client(core)
    parent.budget = LinkBudget(clock=core.clock)  # the windows' cron reads the instance's clock
    engine = SyncEngine(store, parent, SyncIdentity(core, device_id(), __version__), core.status,
                        kind=core.settings.parent.kind, report=report,
                        report_interval=duration_seconds(core.settings.reportInterval),
                        schedule=SyncSchedule.from_settings(core.settings.parent.syncProperties), clock=core.clock,
                        on_storage_error=on_storage_error)
    engine.on_change = core.state_changed.emit
    engine.parent.endpoints.on_switch = lambda switch: endpoint_switched(core.status, engine.parent.endpoints,
                                                                         core.settings.parent.failbackInterval)
    core.active_at_parent = lambda: engine.state.activation == "Active"
    pull_through = PullThrough(LocalContent(store), engine.downstream, core.settings,
                               in_window=lambda: engine.state.in_window, refused=lambda: refused_by_parent(core.status))
    return ParentLink(core, engine, pull_through)


def _parent_client(core: Instance) -> ParentClient:
    parent = core.settings.parent
    connection = parse_connection_string(os.environ.get("ACR_REGISTRY_CONNECTION_STRING"))
    endpoint = resolve_parent_endpoint(parent.endpoint, connection.get("ParentEndpointProtocol"))
    return ParentClient(endpoint, parent.syncToken.name or connection.get("SyncTokenName"),
                        sync_token_password(connection), alternates=_alternates(parent),
                        failback_after=duration_seconds(parent.failbackInterval),
                        connect_timeout=duration_seconds(parent.connectTimeout),
                        first_byte_timeout=duration_seconds(parent.firstByteTimeout), clock=core.clock)


def _alternates(parent) -> list[str]:
    """`parent.alternateEndpoints` resolved as `parent.endpoint` is ($upstream, ParentEndpointProtocol)."""
    protocol = parse_connection_string(os.environ.get("ACR_REGISTRY_CONNECTION_STRING")).get("ParentEndpointProtocol")
    return [resolve_parent_endpoint(endpoint, protocol) for endpoint in parent.alternateEndpoints]
