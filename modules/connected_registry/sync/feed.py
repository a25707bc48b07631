"""Following a connected parent's event feed (SPEC 7.2): long polls from the saved cursor, each event applied
as it comes. A full reconcile comes first when there is no cursor yet, after the parent answered 410 (it no
longer has the events since the cursor: away longer than messageTtl), daily, when one is wanted (the scope
changed, a sync-now) and while a registry sync is owed (registry_sync.py: a resync, a new sync token...).
Outside a window, `catch_up` reads the feed to its head once instead."""

from __future__ import annotations

import time

from connected_registry.sync.activation import ActivationRefused
from connected_registry.sync.downstream import content_failure
from connected_registry.sync.parent_client import (ControlAnswer, ParentProtocolError, ParentUnauthorized,
                                                   ParentUnreachable)
from connected_registry.sync.reconcile import Reconcile
from connected_registry.sync.state import SyncContext
from connected_registry.waits import until_set

LONG_POLL_SECONDS = 20


class Feed:
    def __init__(self, sync: SyncContext, reconcile: Reconcile) -> None:
        self.sync, self.reconcile = sync, reconcile
        sync.state.cursor = self._saved_cursor()

    async def follow(self) -> None:
        """Long polls until a full reconcile is due or wanted, or the cursor expired; the caller loops back."""
        state, reconcile = self.sync.state, self.reconcile
        if state.cursor is None or reconcile.due() or self.sync.registry.owed:
            reconcile.wanted.clear()
            await self._reconcile_from_head()
        while True:
            await reconcile.retry_failed_downloads()
            wait = reconcile.failures.poll_seconds(time.monotonic(), LONG_POLL_SECONDS)  # woken for the next retry
            poll = await until_set(self._read(state.cursor, wait), reconcile.wanted)
            if poll is None:
                reconcile.wanted.clear()
                return  # reconcile now (the caller loops back)
            answer = poll.result()
            if answer.status == 410:
                self.sync.status.set("CURSOR_EXPIRED")
                state.cursor = None
                await self.sync.registry.want("RecoveryService")
                return
            check_feed_answer(self.sync, answer)
            await self._apply_page(answer)
            if reconcile.due():
                return

    async def catch_up(self) -> None:
        """One round outside a window: the events up to the feed's head (a full reconcile without a cursor), then
        the content that failed before, at once: this round is the only chance until the next."""
        state = self.sync.state
        if state.cursor is None or self.sync.registry.owed:
            await self._reconcile_from_head()
            return
        while True:
            answer = await self._read(state.cursor)
            if answer.status == 410:
                state.cursor = None
                await self.sync.registry.want("RecoveryService")
                return await self.catch_up()
            check_feed_answer(self.sync, answer)
            for event in answer.document.get("events") or []:
                await self.apply_event(event)
            next_cursor = int(answer.document.get("next", state.cursor))
            done = next_cursor == state.cursor
            await self.save_cursor(next_cursor)
            if done:
                await self.reconcile.retry_failed_downloads(force=True)
                self.sync.round_ended()
                return

    async def _reconcile_from_head(self) -> None:
        """A full reconcile, then the feed from its head as it was before the reconcile began: nothing is missed."""
        answer = await self._read()
        check_feed_answer(self.sync, answer)
        head = int(answer.document.get("next", 1))
        await self.reconcile.reconcile_all()
        await self.save_cursor(head)

    async def _read(self, cursor: int | None = None, wait: int | None = None) -> ControlAnswer:
        """The feed's head (no cursor: its `next` says where to go on from), or the events after `cursor`, waited
        for up to `wait` seconds (a long poll, which the read timeout allows)."""
        parent, params, read_timeout = self.sync.parent, {}, None
        if cursor is not None:
            params["cursor"] = str(cursor)
        if wait is not None:
            params["wait"], read_timeout = str(wait), wait + parent.first_byte_timeout
        return await parent.control("GET", f"/registries/{self.sync.identity.name}/events", params=params,
                                    headers={"X-Instance-Id": self.sync.identity.instance_id},
                                    read_timeout=read_timeout)

    async def _apply_page(self, answer: ControlAnswer) -> None:
        state = self.sync.state
        events = answer.document.get("events") or []
        if events:
            state.syncing = True
            try:
                for event in events:
                    await self.apply_event(event)
            finally:
                state.syncing = False
        await self.save_cursor(int(answer.document.get("next", state.cursor)))
        if events:
            self.sync.round_ended()
            state.syncs += 1

    async def apply_event(self, event: dict) -> None:
        """One event of the feed; content the parent cannot give goes into the ledger, the rest goes on."""
        try:
            await self.sync.downstream.apply_event(event)
        except Exception as error:
            if not content_failure(error):
                raise
            repository = str(event.get("repository", ""))
            if repository not in self.reconcile.failures:
                await self.reconcile.note_download_failures(
                    repository, [f"{repository}:{event.get('tag') or event.get('digest')}: {error}"])

    def _saved_cursor(self) -> int | None:
        return self.sync.store.control.state().sync_cursor

    async def save_cursor(self, cursor: int) -> None:
        if cursor != self.sync.state.cursor:
            self.sync.state.cursor = cursor
            await self.sync.store.control.update_state(sync_cursor=cursor)


def check_feed_answer(sync: SyncContext, answer: ControlAnswer) -> None:
    """The parent's answer on the feed (or to a report): 200 means the sync works; otherwise the parent refused
    this child (ActivationRefused), its token (ParentUnauthorized), or failed."""
    code = answer.error_code
    if answer.status == 200:
        sync.sync_works()
        return
    if code in ("DEACTIVATED", "ALREADY_ACTIVE"):
        message = answer.error_message(code)
        sync.status.set(code, message=message)
        raise ActivationRefused(code, message, retry=code == "ALREADY_ACTIVE")
    if answer.status in (401, 403):
        raise ParentUnauthorized(f"parent refused the event feed ({answer.status}): the sync token needs "
                                 f"gateway/{sync.identity.name}/message/read", status=answer.status)
    error_type = ParentUnreachable if answer.status >= 500 else ParentProtocolError
    raise error_type(f"event feed answered {answer.status}", status=answer.status)
