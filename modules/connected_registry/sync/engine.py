"""The sync loop of one child (SPEC 6, 7): activate at a connected parent, then follow its event feed
(reconciling fully at first, on 410 and daily), or reconcile every minute against a plain parent; inside
the sync windows, and one round at once on sync-now. Every failure of one iteration is reported and retried
with backoff; nothing here ends the instance.

The loop composes the roles: activation.py, feed.py, reconcile.py (with the failure ledger, ledger.py),
report.py (reporting up) and upstream.py, which share state.py's SyncContext."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone

from connected_registry.status import StatusBoard
from connected_registry.storage import RegistryStore, StorageError
from connected_registry.sync.activation import Activation, ActivationRefused
from connected_registry.sync.downstream import Downstream, first_error
from connected_registry.sync.feed import Feed
from connected_registry.sync.operation import SyncOperation
from connected_registry.sync.parent_client import LINK_ERRORS, ParentClient, ParentError, ParentUnreachable
from connected_registry.sync.reconcile import Reconcile
from connected_registry.sync.registry_sync import RegistrySync, token_fingerprint
from connected_registry.sync.report import ReportUp
from connected_registry.sync.schedule import SyncSchedule
from connected_registry.sync.state import SyncContext, SyncIdentity, SyncState
from connected_registry.sync.upstream import Upstream
from connected_registry.waits import until_set, wait_event

log = logging.getLogger("connected_registry.sync")

PLAIN_PARENT_INTERVAL = 60
MAX_BACKOFF_SECONDS = 60


class SyncEngine:
    def __init__(self, store: RegistryStore, parent: ParentClient, identity: SyncIdentity, status: StatusBoard,
                 kind: str = "auto", report: Callable[[], dict] | None = None, report_interval: float = 300,
                 schedule: SyncSchedule | None = None, clock: Callable[[], float] = time.time,
                 on_storage_error: Callable[[StorageError], None] | None = None) -> None:
        downstream = Downstream(store, parent, lambda: identity.repositories, lambda: identity.platforms)
        self.sync = SyncContext(store, parent, identity, status, downstream, clock=clock)
        self.upstream = Upstream(store, parent, status)
        self.activation = Activation(self.sync, kind)
        self.reconcile = Reconcile(self.sync)
        self.feed = Feed(self.sync, self.reconcile)
        self.reporting = ReportUp(self.sync, report or (lambda: {}), report_interval)
        self.on_storage_error = on_storage_error or (lambda error: None)
        self.schedule = schedule or SyncSchedule()
        self.clock = clock
        self._sync_now_requested = False
        self._activation_tried = False
        self._schedule_changed = asyncio.Event()  # interrupts syncing in a window: the window may be another now
        self.stopped: str | None = None  # why the loop ended for good (DEACTIVATED, MODE_INCOMPATIBLE)

    # --- what the rest of the instance reads and calls ------------------------------------------------------

    @property
    def state(self) -> SyncState:
        return self.sync.state

    @property
    def parent(self) -> ParentClient:
        return self.sync.parent

    @property
    def downstream(self) -> Downstream:
        return self.sync.downstream

    @property
    def operation(self) -> SyncOperation | None:
        """The latest sync-now."""
        return self.sync.state.operation

    @property
    def registry_sync(self) -> RegistrySync:
        """The last registry sync: its trigger, state and times (Azure's registrySyncResult)."""
        return self.sync.registry

    @property
    def on_change(self) -> Callable[[], None]:
        """Called when the activation or the parent's reachability changed: the reporter looks."""
        return self.sync.on_change

    @on_change.setter
    def on_change(self, callback: Callable[[], None]) -> None:
        self.sync.on_change = callback

    def sync_now(self) -> str:
        """A full round at once, in or outside a window (SPEC 7.4); returns the operation's id. A sync-now while
        one is queued or running joins it."""
        state = self.sync.state
        if self.sync.running_operation() is None:
            state.operation = SyncOperation()
        if self.stopped:  # nothing will pick it up: say why at once
            state.operation.finish(self.clock(), RuntimeError(f"this instance no longer syncs: {self.stopped}"))
        self._sync_now_requested = True
        self.upstream.retry_waiting()
        self.reconcile.want()  # in a window: the feed loop reconciles everything now
        state.wake.set()
        return state.operation.id

    async def resync(self) -> str:
        """A registry sync from scratch (ManualResync): every tag in scope at the parent walked again as at the initial
        sync, keeping what is here (nothing is deleted first), then the feed from the parent's head as it was when the
        walk began, so nothing is missed. It runs at once, as sync-now, whose operation shows its progress; until it
        succeeds it is owed, across restarts too."""
        await self.sync.registry.want("ManualResync")
        operation = self.sync_now()
        if self.stopped:
            await self.sync.registry.stopped()
        return operation

    def set_schedule(self, schedule: SyncSchedule) -> None:
        """A new schedule applies at once: the next window is recomputed (SPEC 7.4), also while syncing in one."""
        if (schedule.schedule, schedule.sync_window) == (self.schedule.schedule, self.schedule.sync_window):
            return  # another part of the configuration changed
        self.schedule = schedule
        self._schedule_changed.set()
        self.sync.state.wake.set()

    def scope_changed(self) -> None:
        """The repository list changed: it applies at the next sync (SPEC 3)."""
        self.reconcile.want()  # newly added repositories need a reconcile
        self.sync.state.wake.set()

    def report_soon(self) -> None:
        """Something below changed (a child activated or reported): tell the parent without waiting."""
        self.sync.report_wanted.set()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), timezone.utc)

    # --- the loop -------------------------------------------------------------------------------------

    async def run(self) -> None:
        auth = self.sync.parent.auth
        await self.sync.registry.check_sync_token(token_fingerprint(self.sync.identity.instance_id, auth.token_name,
                                                                    auth.password))
        while True:
            try:
                try:
                    await self._iteration()
                except BaseExceptionGroup as group:  # from the feed and upload tasks: handle the first
                    raise first_error(group) from None
                self.sync.backoff = 1.0
                continue
            except asyncio.CancelledError:
                raise
            except ActivationRefused as refused:
                if await self._refused(refused):
                    return
            except ParentError as error:
                await self._round_failed(error)
                self.sync.parent_failed(error)
            except LINK_ERRORS as error:  # the link broke while a body was streaming: the parent is away
                away = ParentUnreachable(f"the link to parent {self.sync.parent.endpoint} broke: {error!r}")
                await self._round_failed(away)
                self.sync.parent_failed(away)
            except StorageError as error:  # e.g. a full disk: reported; retried, and at once when it recovers
                log.error("sync stopped by the data volume: %s", error)
                self.sync.state.errors += 1
                self.on_storage_error(error)
                await self.sync.registry.stopped()
            except Exception:  # one bad iteration must not end the loop
                log.exception("sync iteration failed; retrying")
                await self._round_failed(RuntimeError("the sync iteration failed: see the registry log"))
                self.sync.state.errors += 1
            await self._pause(self.sync.backoff)  # retried with backoff, at most every 60 s (SPEC 6)
            self.sync.backoff = min(self.sync.backoff * 2, MAX_BACKOFF_SECONDS)

    async def _refused(self, refused: ActivationRefused) -> bool:
        """The parent refused this child: Inactive now; True when the loop ends for good (not to be retried)."""
        await self._round_failed(refused)
        await self.sync.became_inactive()
        self.sync.on_change()
        if refused.retry:
            return False
        log.error("sync stopped: %s", refused)
        self.stopped = str(refused)
        return True

    async def _pause(self, seconds: float) -> None:
        """Wait, or less when woken. A wake-up that came while we were busy is not lost: it ends this pause."""
        await wait_event(self.sync.state.wake, seconds)
        self.sync.state.wake.clear()

    async def _round_failed(self, error: BaseException) -> None:
        """The registry sync and the sync-now waiting or running end Failed; the loop tries again after its backoff."""
        await self.sync.registry.stopped()  # first: who sees the operation end sees this too
        if self.sync.state.operation is not None:
            self.sync.state.operation.finish(self.clock(), error)

    async def _iteration(self) -> None:
        self._schedule_changed.clear()
        now = self.now()
        window = self.schedule.current_window(now)
        self.sync.state.window = window or self.schedule.next_window(now)
        self.sync.state.in_window = window is not None
        if window is None:
            if self._sync_now_requested:  # syncNow: one round at once, outside any window
                self._sync_now_requested = False
                await self._one_round()
            elif not self._activation_tried:
                await self._activate_outside_window()
            await self._pause(max(self.schedule.seconds_until_next_window(self.now()), 0.05))
            return
        self._sync_now_requested = False
        if window.end is None:
            await self._until_schedule_changes(self._sync_in_window())
            return
        try:
            async with asyncio.timeout((window.end - self.now()).total_seconds()):
                await self._until_schedule_changes(self._sync_in_window())
        except TimeoutError:
            log.info("the sync window ended at %s: sync resumes in the next one", window.end.isoformat())
            await self.sync.registry.stopped(timed_out=True)

    async def _until_schedule_changes(self, work) -> None:
        """Run `work` (syncing in a window) until it ends or the schedule changes; then the caller looks again."""
        finished = await until_set(work, self._schedule_changed)
        if finished is None:
            log.info("the sync schedule changed to %r: the next window is computed again", self.schedule)
        else:
            finished.result()  # its error, if any, goes to run()'s handling

    async def _activate_outside_window(self) -> None:
        """Activation is one small call: made at start even outside a window, so a new deployment shows Active
        (or ALREADY_ACTIVE) at once. A parent out of reach is no error here: activation then waits for the window."""
        try:
            await self.activation.detect_parent_kind()
            if self.sync.state.parent_kind == "connected" and not self.sync.state.activation_confirmed:
                await self.activation.activate()
        except ParentError as error:
            self.sync.parent_failed(error)
        self._activation_tried = True

    async def _one_round(self) -> None:
        state = self.sync.state  # state.operation is read anew each time: a sync-now may come meanwhile
        if state.operation is not None:
            state.operation.start(self.clock())
        await self.activation.detect_parent_kind()
        if state.parent_kind == "connected":
            if not state.activation_confirmed:
                await self.activation.activate()
            if state.operation is not None and state.operation.state == "Running":
                state.cursor = None  # sync-now compares everything, then goes on from the feed's head
            await self.feed.catch_up()
        else:
            await self.reconcile.reconcile_all()
        if self.sync.identity.mode == "ReadWrite":
            await self.upstream.drain()
        if state.operation is not None:
            state.operation.finish(self.clock())
        if state.parent_kind == "connected":
            await self.reporting.send()  # outside a window the parent hears from us only now

    async def _sync_in_window(self) -> None:
        await self.activation.detect_parent_kind()
        if self.sync.state.parent_kind == "plain":
            self.sync.status.set("PARENT_NOT_CONNECTED", endpoint=self.sync.parent.endpoint)
            self.upstream.plain_parent = True
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._reconcile_forever())
                if self.sync.identity.mode == "ReadWrite":
                    tasks.create_task(self._upload_forever())
            return
        if not self.sync.state.activation_confirmed:
            await self.activation.activate()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._follow_feed_forever())
            tasks.create_task(self.reporting.forever())
            if self.sync.identity.mode == "ReadWrite":
                tasks.create_task(self._upload_forever())

    async def _reconcile_forever(self) -> None:
        """A plain parent has no feed: reconcile every minute (and at once on sync-now)."""
        while True:
            await self.reconcile.reconcile_all()
            if not self.sync.state.activation_confirmed:  # authenticated: as Active as a plain parent allows (SPEC 6)
                await self.sync.became_active()
            await self._pause(PLAIN_PARENT_INTERVAL)

    async def _follow_feed_forever(self) -> None:
        while True:
            await self.feed.follow()

    async def _upload_forever(self) -> None:
        """Drain the outbox whenever something was written here, and at least every few seconds."""
        store = self.sync.store
        while True:
            head = store.control.event_bounds()[1] - 1
            self.sync.state.syncing = bool(store.outbox())
            try:
                await self.upstream.drain()  # also when empty: the details of entries dropped meanwhile go
            finally:
                self.sync.state.syncing = False
            await store.wait_for_events(head, 5)
