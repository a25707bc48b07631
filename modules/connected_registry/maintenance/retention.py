"""What the instance keeps (SPEC 7.2, 7.4): events for the longest messageTtl an active child sent (P2D without
children), and the content of repositories that left a ReadOnly child's scope: hidden at once, deleted after seven
days, kept when they come back before then. Checked every ten minutes and after every configuration change."""

from __future__ import annotations

import asyncio
import logging

from connected_registry.auth.permissions import repository_in_scope
from connected_registry.durations import duration_seconds
from connected_registry.instance import Instance
from connected_registry.storage import RegistryStore
from connected_registry.timefmt import utc_timestamp

log = logging.getLogger("connected_registry")

CHECK_SECONDS = 600
EVENTS_KEPT_WITHOUT_CHILDREN = 2 * 24 * 3600
REMOVAL_GRACE_SECONDS = 7 * 24 * 3600


class Retention:
    def __init__(self, core: Instance, store: RegistryStore) -> None:
        self.core, self.store = core, store

    def follow_settings(self, *_changed: object) -> None:
        """The scope may have changed: hide (and later delete) what left it, keep what came back."""
        self.core.tasks.spawn(self.remove_out_of_scope(), "scope-clean-up")

    async def run(self) -> None:
        while True:
            try:
                await self.prune_events()
                await self.remove_out_of_scope()
            except Exception:  # retried next time
                log.exception("event retention or scope clean-up failed")
            await asyncio.sleep(CHECK_SECONDS)

    async def prune_events(self) -> int:
        """Keep events for the longest messageTtl any active child sent (P2D without children)."""
        ttls = [duration_seconds(child.message_ttl) for child in self.store.control.children()
                if child.status == "Active" and child.message_ttl]
        keep = max(ttls, default=EVENTS_KEPT_WITHOUT_CHILDREN)
        return await self.store.control.prune_events(utc_timestamp(self.core.clock() - keep))

    async def remove_out_of_scope(self) -> list[str]:
        """Repositories that left a ReadOnly child's scope are deleted seven days after they left. Returns
        what was deleted."""
        core = self.core
        if core.is_root or core.mode != "ReadOnly":
            core.status.clear("REPOSITORY_PENDING_REMOVAL")
            return []
        now = core.clock()
        pending = dict(self.store.control.state().pending_removal)
        listed = self.store.list_repositories(None, None)
        for repository in listed:
            if repository_in_scope(list(core.repositories), repository) or not self.store.has_manifests(repository):
                pending.pop(repository, None)
            else:
                pending.setdefault(repository, now)
        removed = [name for name in listed if name in pending and now - pending[name] >= REMOVAL_GRACE_SECONDS]
        await self.store.remove_repositories(removed)
        for repository in removed:
            pending.pop(repository)
        await self.store.control.update_state(pending_removal=pending)
        self._report_pending(pending)
        return removed

    def _report_pending(self, pending: dict[str, float]) -> None:
        if not pending:
            self.core.status.clear("REPOSITORY_PENDING_REMOVAL")
            return
        when = ", ".join(f"{name} on {utc_timestamp(since + REMOVAL_GRACE_SECONDS)[:10]}"
                         for name, since in sorted(pending.items()))
        self.core.status.set("REPOSITORY_PENDING_REMOVAL", when=when)
