"""The registry sync result (Azure's `registrySyncResult`): the last full sync that rebuilt this child's content
from its parent's listing, why it ran and how it ended, kept in the data volume so a restart reports it as it was.

A registry sync is the full reconcile of every repository in scope that one of Azure's four triggers asks for
(the feed's cursor goes to the parent's head after it, so nothing is missed):

- `InitialSync`: the first one after activation (a new volume, or one given a new identity);
- `ManualResync`: the `resync` direct method, `connected-registry resync`, or `POST /acr/connected/v1/resync`;
- `SyncTokenUpdate`: the sync token (its name or password, from the connection string) is not the one the volume
  last synced with: the new token may read other repositories;
- `RecoveryService`: the engine starting one again itself: the parent no longer had the events since the cursor
  (410, away longer than messageTtl), or the last one Failed or TimedOut and is retried after its backoff.

Its `syncState`: `Pending` (wanted, not started: waiting for a window or the parent), `Syncing`, `Succeeded`,
`Failed` (the parent unreachable or refusing, the data volume, or content of some repositories the parent could not
give: DOWNLOAD_FAILED names them and retries them on its own backoff) and `TimedOut` (the sync window ended before it
finished: it goes on in the next window; or it took longer than messageTtl, so the parent no longer keeps the events
from the head it would go on from). One that did not end `Succeeded` or `Failed` on content is still owed: the
next sync round starts with it. The other full reconciles (daily, a scope change, sync-now) leave the result as it
is."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import Any

from connected_registry.storage import RegistryStore, StorageError
from connected_registry.timefmt import utc_timestamp

TRIGGERS = ("InitialSync", "ManualResync", "SyncTokenUpdate", "RecoveryService")
STATES = ("Pending", "Syncing", "Succeeded", "Failed", "TimedOut")
log = logging.getLogger("connected_registry.sync")

REPORTED = ("syncTrigger", "syncState", "lastSyncStartTime", "lastSyncEndTime", "lastSuccessfulSyncEndTime")


def token_fingerprint(instance_id: str, token_name: str | None, password: str | None) -> str:
    """Tells a changed sync token from the one before without keeping the password: keyed by the instance id."""
    message = f"{token_name or ''}\0{password or ''}".encode()
    return hmac.new(instance_id.encode(), message, hashlib.sha256).hexdigest()[:32]


class RegistrySync:
    def __init__(self, store: RegistryStore, clock: Callable[[], float], on_change: Callable[[], None],
                 message_ttl: Callable[[], float] = lambda: float("inf")) -> None:
        self.store, self.clock, self.on_change, self.message_ttl = store, clock, on_change, message_ttl
        state = store.control.state()
        self.record: dict[str, Any] = dict(state.registry_sync)
        if not self.record and state.sync_cursor is None:  # never synced here: the initial sync is owed
            self.record = {"syncTrigger": "InitialSync", "syncState": "Pending", "owed": True}
        self.running = False  # the full reconcile running now is the registry sync
        self.started = 0.0  # when it began, on the instance's clock

    @property
    def owed(self) -> bool:
        return bool(self.record.get("owed"))

    def document(self) -> dict | None:
        """What the status document reports (Azure's field names); None before anything is known."""
        reported = {key: self.record.get(key) for key in REPORTED}
        return reported if reported["syncState"] else None

    async def check_sync_token(self, fingerprint: str) -> None:
        """At start: a sync token other than the one the volume last synced with owes a registry sync."""
        known = self.record.get("tokenFingerprint")
        if known == fingerprint:
            return
        if known is not None:  # None: the first start (or one of a version before this record)
            self.record.update(syncTrigger="SyncTokenUpdate", syncState="Pending", owed=True)
        self.record["tokenFingerprint"] = fingerprint
        await self._save()

    async def want(self, trigger: str) -> None:
        """A registry sync for `trigger`, at the next sync round (one running now is joined: it walks everything)."""
        if self.running:
            return
        self.record.update(syncTrigger=trigger, syncState="Pending", owed=True)
        await self._save()

    async def begin(self) -> None:
        """A full reconcile starts: the registry sync, when one is owed; a retry of one that failed is the engine's."""
        if not self.owed:
            return
        if self.record.get("syncState") in ("Failed", "TimedOut"):
            self.record["syncTrigger"] = "RecoveryService"
        self.running, self.started = True, self.clock()
        self.record.update(syncState="Syncing", lastSyncStartTime=utc_timestamp(self.started))
        await self._save()

    async def finish(self, content_failed: bool) -> None:
        """The full reconcile went through every repository. Content the parent could not give makes it Failed,
        but it is not owed again: those repositories are retried on their own backoff (DOWNLOAD_FAILED)."""
        if not self.running:
            return
        if self.clock() - self.started > self.message_ttl():  # the events after its head are gone at the parent
            await self.stopped(timed_out=True)
            return
        self.running = False
        now = utc_timestamp(self.clock())
        self.record.update(syncState="Failed" if content_failed else "Succeeded", lastSyncEndTime=now, owed=False)
        if not content_failed:
            self.record["lastSuccessfulSyncEndTime"] = now
        await self._save()

    async def stopped(self, timed_out: bool = False) -> None:
        """The round ended without finishing (the parent, the volume, the window's end): an owed registry sync that
        was waiting or running is Failed (TimedOut at the window's end), and stays owed."""
        state = self.record.get("syncState")
        if not self.owed or state not in ("Pending", "Syncing") or (timed_out and state != "Syncing"):
            return
        self.running = False
        self.record.update(syncState="TimedOut" if timed_out else "Failed", lastSyncEndTime=utc_timestamp(self.clock()))
        await self._save()

    async def _save(self) -> None:
        """Kept in the volume and reported at once. A volume that cannot take it (full) does not stop the sync: the
        record is written with its next change, and reported meanwhile."""
        try:
            await self.store.control.update_state(registry_sync=dict(self.record))
        except StorageError as error:
            log.warning("could not keep the registry sync result (%s): %s", self.record.get("syncState"), error)
        self.on_change()
