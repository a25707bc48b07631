"""The sync loop of one child (SPEC 6, 7): activate at a connected parent, then follow its event feed
(reconciling fully at first, on 410 and daily), or reconcile every minute against a plain parent.
Every failure of one iteration is reported and retried with backoff; nothing here ends the instance."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from connected_registry.auth.permissions import repository_pattern_matches
from connected_registry.printable import printable
from connected_registry.status import StatusBoard
from connected_registry.storage import RegistryStore, StorageError
from connected_registry.sync.downstream import Downstream, content_failure, first_error
from connected_registry.sync.operation import SyncOperation
from connected_registry.sync.parent_client import LINK_ERRORS, ParentClient, ParentError, next_link
from connected_registry.sync.schedule import SyncSchedule, Window
from connected_registry.sync.upstream import Upstream
from connected_registry.timefmt import utc_timestamp
from connected_registry.waits import wait_event

log = logging.getLogger("connected_registry.sync")

LONG_POLL_SECONDS = 20
RECONCILE_EVERY_SECONDS = 24 * 3600
PLAIN_PARENT_INTERVAL = 60
MAX_BACKOFF_SECONDS = 60
RETRY_FIRST_SECONDS = 5  # content the parent could not give: asked again after this, doubling...
RETRY_MAX_SECONDS = 1800  # ...up to this (a broken image at the parent must not eat a metered link)


class ActivationRefused(Exception):
    def __init__(self, code: str, message: str, retry: bool) -> None:
        self.code, self.retry = code, retry
        super().__init__(message)


@dataclass
class SyncIdentity:
    name: str
    mode: str
    instance_id: str
    device_id: str
    version: str
    message_ttl: str
    repositories: list[str]


@dataclass
class SyncState:
    activation: str = "Inactive"  # Active | Inactive
    activated_since: str | None = None
    parent_kind: str | None = None  # connected | plain
    online: bool = False
    syncing: bool = False
    last_sync_time: str | None = None
    cursor: int | None = None
    errors: int = 0
    syncs: int = 0
    window: Window | None = None  # the current or next sync window
    in_window: bool = True
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class SyncEngine:
    def __init__(self, store: RegistryStore, parent: ParentClient, identity: SyncIdentity, status: StatusBoard,
                 kind: str = "auto", report: Callable[[], dict] | None = None, report_interval: float = 300,
                 schedule: SyncSchedule | None = None, clock: Callable[[], float] = time.time,
                 on_storage_error: Callable[[StorageError], None] | None = None) -> None:
        self.store, self.parent, self.identity, self.status = store, parent, identity, status
        self.on_storage_error = on_storage_error or (lambda error: None)
        self.schedule = schedule or SyncSchedule()
        self.clock = clock
        self._sync_now_requested = False
        self._activation_tried = False
        self.kind = kind
        self.report = report or (lambda: {})
        self.report_interval = report_interval
        self._report_wanted = asyncio.Event()
        self._reconcile_wanted = asyncio.Event()  # interrupts a long poll: the scope changed, or syncNow
        self._schedule_changed = asyncio.Event()  # interrupts syncing in a window: the window may be another now
        self.state = SyncState()
        self.operation: SyncOperation | None = None  # the latest sync-now
        self.stopped: str | None = None  # why the loop ended for good (DEACTIVATED, MODE_INCOMPATIBLE)
        self.on_change: Callable[[], None] = lambda: None  # activation or reachability changed: the reporter looks
        self.downstream = Downstream(store, parent, identity.repositories)
        self.upstream = Upstream(store, parent, status)
        saved = store.control.state()
        self.state.cursor = saved.sync_cursor
        self._last_reconcile = time.monotonic()  # a restart with a cursor follows the feed; the daily reconcile counts from here
        self._backoff = 1.0  # after a failure; back to 1 s once the sync works again (the feed answers)
        # repository -> why some of its content could not be copied (kept across restarts; retried with backoff)
        self.download_failures: dict[str, str] = dict(saved.download_failures)
        self._retry_delay, self._retry_at = RETRY_FIRST_SECONDS, 0.0
        self._report_download_failures()

    # --- the loop -------------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                try:
                    await self._iteration()
                except BaseExceptionGroup as group:  # from the feed and upload tasks: handle the first
                    raise first_error(group) from None
                self._backoff = 1.0
                continue
            except asyncio.CancelledError:
                raise
            except ActivationRefused as refused:
                self._operation_failed(refused)
                self.state.activation = "Inactive"
                self.on_change()
                if not refused.retry:
                    log.error("sync stopped: %s", refused)
                    self.stopped = str(refused)
                    return
            except ParentError as error:
                self._operation_failed(error)
                self._parent_failed(error)
            except LINK_ERRORS as error:  # the link broke while a body was streaming: the parent is away
                away = ParentError("unreachable", f"the link to parent {self.parent.endpoint} broke: {error!r}")
                self._operation_failed(away)
                self._parent_failed(away)
            except StorageError as error:  # e.g. a full disk: reported; retried, and at once when it recovers
                log.error("sync stopped by the data volume: %s", error)
                self.state.errors += 1
                self.on_storage_error(error)
            except Exception:  # one bad iteration must not end the loop
                log.exception("sync iteration failed; retrying")
                self._operation_failed(RuntimeError("the sync iteration failed: see the registry log"))
                self.state.errors += 1
            await self._pause(self._backoff)  # retried with backoff, at most every 60 s (SPEC 6)
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_SECONDS)

    async def _pause(self, seconds: float) -> None:
        """Wait, or less when woken. A wake-up that came while we were busy is not lost: it ends this pause."""
        await wait_event(self.state.wake, seconds)
        self.state.wake.clear()

    def sync_now(self) -> str:
        """A full round at once, in or outside a window (SPEC 7.4); returns the operation's id. A sync-now while
        one is queued or running joins it."""
        if self.operation is None or self.operation.state not in ("Queued", "Running"):
            self.operation = SyncOperation()
        if self.stopped:  # nothing will pick it up: say why at once
            self.operation.finish(self.clock(), RuntimeError(f"this instance no longer syncs: {self.stopped}"))
        self._sync_now_requested = True
        self._last_reconcile = -RECONCILE_EVERY_SECONDS  # in a window: the feed loop reconciles everything now
        self._reconcile_wanted.set()
        self.state.wake.set()
        return self.operation.id

    def _operation_failed(self, error: BaseException) -> None:
        if self.operation is not None:
            self.operation.finish(self.clock(), error)

    def set_schedule(self, schedule: SyncSchedule) -> None:
        """A new schedule applies at once: the next window is recomputed (SPEC 7.4), also while syncing in one."""
        if (schedule.schedule, schedule.sync_window) == (self.schedule.schedule, self.schedule.sync_window):
            return  # another part of the configuration changed
        self.schedule = schedule
        self._schedule_changed.set()
        self.state.wake.set()

    def set_repositories(self, repositories: list[str]) -> None:
        """A new repository list applies at the next sync (SPEC 3)."""
        if repositories == self.identity.repositories:
            return  # another part of the configuration changed: no reconcile needed
        self.identity.repositories = repositories
        self.downstream.repositories = repositories
        self._last_reconcile = -RECONCILE_EVERY_SECONDS  # newly added repositories need a reconcile
        self._reconcile_wanted.set()
        self.state.wake.set()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), timezone.utc)

    def _synced(self) -> None:
        """A sync round ended; the first one since start is news for the parent's view, so report it soon."""
        if self.state.last_sync_time is None:
            self.report_soon()
        self.state.last_sync_time = utc_timestamp(self.clock())

    def report_soon(self) -> None:
        """Something below changed (a child activated or reported): tell the parent without waiting."""
        self._report_wanted.set()

    def _parent_failed(self, error: ParentError) -> None:
        if self.state.online:
            self.on_change()
        self.state.online = False
        self.state.errors += 1
        if error.kind == "auth":
            self.status.set("Parent", "Error", "PARENT_AUTH_FAILED", str(error))
        else:
            self.status.set("Parent", "Warning", "PARENT_UNREACHABLE",
                            f"{error}; content already here is still served, and sync resumes when the parent answers")

    def _parent_answered(self) -> None:
        if not self.state.online:
            self.state.online = True
            self.on_change()
        self.status.clear("PARENT_UNREACHABLE")
        self.status.clear("PARENT_AUTH_FAILED")

    async def _iteration(self) -> None:
        self._schedule_changed.clear()
        now = self.now()
        window = self.schedule.current_window(now)
        self.state.window = window or self.schedule.next_window(now)
        self.state.in_window = window is not None
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

    async def _until_schedule_changes(self, work) -> None:
        """Run `work` (syncing in a window) until it ends or the schedule changes; then the caller looks again."""
        finished = await _until_set(work, self._schedule_changed)
        if finished is None:
            log.info("the sync schedule changed to %r: the next window is computed again", self.schedule)
        else:
            finished.result()  # its error, if any, goes to run()'s handling

    async def _activate_outside_window(self) -> None:
        """Activation is one small call: made at start even outside a window, so a new deployment shows Active
        (or ALREADY_ACTIVE) at once. A parent out of reach is no error here: activation then waits for the window."""
        try:
            await self._detect_parent_kind()
            if self.state.parent_kind == "connected" and self.state.activation != "Active":
                await self.activate()
        except ParentError as error:
            self._parent_failed(error)
        self._activation_tried = True

    async def _one_round(self) -> None:
        if self.operation is not None:
            self.operation.start(self.clock())
        await self._detect_parent_kind()
        if self.state.parent_kind == "connected":
            if self.state.activation != "Active":
                await self.activate()
            if self.operation is not None and self.operation.state == "Running":
                self.state.cursor = None  # sync-now compares everything, then goes on from the feed's head
            await self._catch_up_feed()
        else:
            await self.reconcile_all()
        if self.identity.mode == "ReadWrite":
            await self.upstream.drain()
        if self.operation is not None:
            self.operation.finish(self.clock())
        if self.state.parent_kind == "connected":
            await self._send_report()  # outside a window the parent hears from us only now

    async def _catch_up_feed(self) -> None:
        headers = {"X-Instance-Id": self.identity.instance_id}
        path = f"/registries/{self.identity.name}/events"
        if self.state.cursor is None:
            status, body = await self.parent.control("GET", path, headers=headers)
            self._check_feed_status(status, body)
            await self.reconcile_all()
            await self._save_cursor(int(body.get("next", 1)))
            return
        while True:
            status, body = await self.parent.control("GET", path, headers=headers,
                                                     params={"cursor": str(self.state.cursor)})
            if status == 410:
                self.state.cursor = None
                return await self._catch_up_feed()
            self._check_feed_status(status, body)
            for event in body.get("events") or []:
                await self._apply_event(event)
            next_cursor = int(body.get("next", self.state.cursor))
            done = next_cursor == self.state.cursor
            await self._save_cursor(next_cursor)
            if done:
                await self._retry_failed_downloads(force=True)  # outside a window this round is the only chance
                self._synced()
                return

    async def _detect_parent_kind(self) -> None:
        if self.state.parent_kind is None:
            connected = self.kind == "connected" or (self.kind == "auto" and await self.parent.is_connected_parent())
            self.state.parent_kind = "connected" if connected else "plain"

    async def _sync_in_window(self) -> None:
        await self._detect_parent_kind()
        if self.state.parent_kind == "plain":
            self.status.set("Parent", "Warning", "PARENT_NOT_CONNECTED",
                            f"{self.parent.endpoint} is a plain OCI registry: content syncs, but there is no activation "
                            "or event feed")
            self.upstream.plain_parent = True
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._reconcile_forever())
                if self.identity.mode == "ReadWrite":
                    tasks.create_task(self._upload_forever())
            return
        if self.state.activation != "Active":
            await self.activate()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._follow_feed_forever())
            tasks.create_task(self._report_forever())
            if self.identity.mode == "ReadWrite":
                tasks.create_task(self._upload_forever())

    async def _report_forever(self) -> None:
        """This instance's reported document and its subtree go to the parent (SPEC 11), at most every 2 s."""
        while True:
            self._report_wanted.clear()
            await self._send_report()
            await wait_event(self._report_wanted, self.report_interval)
            await asyncio.sleep(2)  # coalesce bursts of reports from below

    async def _send_report(self) -> None:
        # Text from elsewhere (a parent's message, a grandchild's report) may carry control characters, which the
        # parent refuses in a report: they go, the rest of the text stays.
        status, body = await self.parent.control("POST", f"/registries/{self.identity.name}/status",
                                                 body=printable(self.report()),
                                                 headers={"X-Instance-Id": self.identity.instance_id})
        if status == 400:  # what this instance said does not fit the parent's schema: syncing goes on regardless
            errors = body.get("errors") if isinstance(body.get("errors"), list) else [{}]
            log.warning("parent %s refused the status report: %s", self.parent.endpoint,
                        printable(str((errors[0] if errors else {}).get("message", "400"))))
        elif status != 204:
            self._check_feed_status(status, body)

    async def _reconcile_forever(self) -> None:
        """A plain parent has no feed: reconcile every minute (and at once on sync-now)."""
        while True:
            await self.reconcile_all()
            if self.state.activation != "Active":  # authenticated: as Active as a plain parent allows (SPEC 6)
                self.state.activation, self.state.activated_since = "Active", utc_timestamp(self.clock())
            await self._pause(PLAIN_PARENT_INTERVAL)

    async def _follow_feed_forever(self) -> None:
        while True:
            await self._follow_feed()

    async def _upload_forever(self) -> None:
        """Drain the outbox whenever something was written here, and at least every few seconds."""
        while True:
            head = self.store.control.event_bounds()[1] - 1
            self.state.syncing = bool(self.store.outbox())
            try:
                await self.upstream.drain()  # also when empty: the details of entries dropped meanwhile go
            finally:
                self.state.syncing = False
            await self.store.wait_for_events(head, 5)

    # --- activation (SPEC 6) ----------------------------------------------------------------------------

    async def activate(self) -> None:
        identity = self.identity
        document = {"instanceId": identity.instance_id, "deviceId": identity.device_id, "mode": identity.mode,
                    "version": identity.version, "messageTtl": identity.message_ttl,
                    "repositories": identity.repositories}
        status, body = await self.parent.control("POST", f"/registries/{identity.name}/activate", body=document)
        self._parent_answered()
        if status == 200:
            self.state.activation, self.state.activated_since = "Active", utc_timestamp(self.clock())
            for code in ("ALREADY_ACTIVE", "DEACTIVATED", "MODE_INCOMPATIBLE"):
                self.status.clear(code)
            self.on_change()
            log.info("activated %s at %s", identity.name, self.parent.endpoint)
            return
        code = ((body.get("errors") or [{}])[0]).get("code", "") if isinstance(body.get("errors"), list) else ""
        message = ((body.get("errors") or [{}])[0]).get("message", f"activation answered {status}")
        if status in (401, 403) and code not in ("MODE_INCOMPATIBLE",):
            raise ParentError("auth", f"parent {self.parent.endpoint} refused the sync token for {identity.name} "
                                      f"({status}): check the token's gateway/{identity.name} actions and "
                                      "SyncTokenPassword in ACR_REGISTRY_CONNECTION_STRING", status=status)
        if code == "ALREADY_ACTIVE":
            self.status.set("Parent", "Error", "ALREADY_ACTIVE", message)
            raise ActivationRefused(code, message, retry=True)
        if code == "DEACTIVATED":
            self.status.set("Parent", "Error", "DEACTIVATED", message)
            raise ActivationRefused(code, message, retry=False)
        if code == "MODE_INCOMPATIBLE":
            self.status.set("Parent", "Error", "MODE_INCOMPATIBLE", message)
            raise ActivationRefused(code, message, retry=False)
        raise ParentError("protocol", f"activation at {self.parent.endpoint} answered {status}: {message}")

    # --- following the feed (SPEC 7.2) ---------------------------------------------------------------------

    async def _follow_feed(self) -> None:
        headers = {"X-Instance-Id": self.identity.instance_id}
        path = f"/registries/{self.identity.name}/events"
        if self.state.cursor is None or time.monotonic() - self._last_reconcile > RECONCILE_EVERY_SECONDS:
            self._reconcile_wanted.clear()
            status, body = await self.parent.control("GET", path, headers=headers)
            self._check_feed_status(status, body)
            head = int(body.get("next", 1))
            await self.reconcile_all()
            await self._save_cursor(head)
        while True:
            await self._retry_failed_downloads()
            wait = LONG_POLL_SECONDS
            if self.download_failures:  # wake up for the next retry
                wait = max(1, min(wait, round(self._retry_at - time.monotonic())))
            poll = await _until_set(self.parent.control(
                "GET", path, headers=headers, read_timeout=wait + self.parent.first_byte_timeout,
                params={"cursor": str(self.state.cursor), "wait": str(wait)}), self._reconcile_wanted)
            if poll is None:
                self._reconcile_wanted.clear()
                return  # reconcile now (the caller loops back)
            status, body = poll.result()
            if status == 410:
                self.status.set("Sync", "Information", "CURSOR_EXPIRED",
                                "the parent no longer had the events since the last sync (away longer than messageTtl): "
                                "a full reconcile ran")
                self.state.cursor = None
                return
            self._check_feed_status(status, body)
            events = body.get("events") or []
            if events:
                self.state.syncing = True
                try:
                    for event in events:
                        await self._apply_event(event)
                finally:
                    self.state.syncing = False
            await self._save_cursor(int(body.get("next", self.state.cursor)))
            if events:
                self._synced()
                self.state.syncs += 1
            if time.monotonic() - self._last_reconcile > RECONCILE_EVERY_SECONDS:
                return

    def _check_feed_status(self, status: int, body: dict) -> None:
        errors = body.get("errors") if isinstance(body.get("errors"), list) else [{}]
        code = (errors[0] if errors else {}).get("code", "")
        if status == 200:
            self._parent_answered()
            self._backoff = 1.0  # the feed works: the next blip is retried at once, however bad it was before
            return
        if code in ("DEACTIVATED", "ALREADY_ACTIVE"):
            message = (errors[0] or {}).get("message", code)
            self.status.set("Parent", "Error", code, message)
            raise ActivationRefused(code, message, retry=code == "ALREADY_ACTIVE")
        if status in (401, 403):
            raise ParentError("auth", f"parent refused the event feed ({status}): the sync token needs "
                                      f"gateway/{self.identity.name}/message/read", status=status)
        raise ParentError("unreachable" if status >= 500 else "protocol", f"event feed answered {status}", status=status)

    async def _save_cursor(self, cursor: int) -> None:
        if cursor != self.state.cursor:
            self.state.cursor = cursor
            await self.store.control.update_state(sync_cursor=cursor)

    # --- full reconcile ------------------------------------------------------------------------------------

    async def repositories_in_scope(self) -> list[str]:
        exact = [pattern for pattern in self.identity.repositories if not pattern.endswith("*")]
        patterns = [pattern for pattern in self.identity.repositories if pattern.endswith("*")]
        found = set(exact)
        if patterns:
            catalog = await self._parent_catalog()
            if catalog is None:
                self.status.set("Sync", "Warning", "CATALOG_REFUSED",
                                f"the parent refused its catalog, so the patterns {', '.join(patterns)} cannot be "
                                "expanded; exact repository names still sync")
            else:
                self.status.clear("CATALOG_REFUSED")
                found |= {name for name in catalog if any(repository_pattern_matches(p, name) for p in patterns)}
        return sorted(found)

    async def _parent_catalog(self) -> list[str] | None:
        names: list[str] = []
        path = "/v2/_catalog?n=1000"
        while path:
            async with await self.parent.request("GET", path, scope="registry:catalog:*") as response:
                if response.status in (401, 403, 404):
                    return None
                if response.status != 200:
                    raise ParentError("unreachable", f"catalog answered {response.status}", status=response.status)
                document = await response.json(content_type=None)
                link = response.headers.get("Link")
            names += [n for n in document.get("repositories") or [] if isinstance(n, str)]
            path = next_link(link, self.parent.endpoint)
        return names

    async def reconcile_all(self) -> None:
        operation = self.operation if self.operation is not None and self.operation.state in ("Queued", "Running") \
            else None
        if operation is not None:
            operation.start(self.clock())
        self.state.syncing = True
        try:
            repositories = await self.repositories_in_scope()
            if operation is not None:
                operation.repositoriesTotal, operation.repositoriesDone = len(repositories), 0
            for repository in repositories:
                if operation is not None:
                    operation.repository = repository
                await self._reconcile_repository(repository)
                if operation is not None:
                    operation.repositoriesDone += 1
            for repository in set(self.download_failures) - set(repositories):  # left the scope
                await self._note_download_failures(repository, [])
            if self.download_failures:  # this reconcile was a try: the next retry waits its backoff
                self._retry_at = max(self._retry_at, time.monotonic() + self._retry_delay)
        finally:
            self.state.syncing = False
        if operation is not None:
            failed = sorted(set(repositories) & set(self.download_failures))
            operation.finish(self.clock(), RuntimeError(
                f"{len(failed)} of {len(repositories)} repositories could not be copied whole "
                f"({', '.join(failed[:5])}): {self.download_failures[failed[0]]}") if failed else None)
        self._parent_answered()
        self._backoff = 1.0
        if self.operation is None or self.operation.state != "Queued":  # a sync-now that came meanwhile: again
            self._last_reconcile = time.monotonic()
        self._synced()
        self.state.syncs += 1

    # --- content the parent could not give (a broken image there must not hold up the rest) -------------------

    async def _apply_event(self, event: dict) -> None:
        try:
            await self.downstream.apply_event(event)
        except Exception as error:
            if not content_failure(error):
                raise
            repository = str(event.get("repository", ""))
            if repository not in self.download_failures:
                await self._note_download_failures(
                    repository, [f"{repository}:{event.get('tag') or event.get('digest')}: {error}"])

    async def _reconcile_repository(self, repository: str) -> None:
        try:
            failures = await self.downstream.reconcile_repository(repository)
        except Exception as error:
            if not content_failure(error):
                raise
            failures = [f"{repository}: {error}"]  # e.g. its tag list refused to the sync token
        await self._note_download_failures(repository, failures)

    async def _retry_failed_downloads(self, force: bool = False) -> None:
        """Reconcile the repositories whose content failed, when their backoff has passed (or `force`)."""
        if not self.download_failures or (not force and time.monotonic() < self._retry_at):
            return
        for repository in sorted(self.download_failures):
            if self.downstream.in_scope(repository):
                log.info("retrying the content of %s that the parent could not give", repository)
                await self._reconcile_repository(repository)
            else:
                await self._note_download_failures(repository, [])
        if self.download_failures:
            self._retry_at = time.monotonic() + self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_SECONDS)

    async def _note_download_failures(self, repository: str, failures: list[str]) -> None:
        before = dict(self.download_failures)
        if failures:
            self.state.errors += 1
            for failure in failures:
                log.warning("could not copy from the parent: %s", failure)
            more = f" (and {len(failures) - 2} more)" if len(failures) > 2 else ""
            self.download_failures[repository] = "; ".join(failures[:2]) + more
            if repository not in before:  # a new failure is asked again soon
                self._retry_delay, self._retry_at = RETRY_FIRST_SECONDS, time.monotonic() + RETRY_FIRST_SECONDS
        else:
            self.download_failures.pop(repository, None)
            if repository in before:
                log.info("the content of %s is whole again", repository)
        if self.download_failures != before:
            await self.store.control.update_state(download_failures=dict(self.download_failures))
            if not self.download_failures:
                self._retry_delay = RETRY_FIRST_SECONDS
        self._report_download_failures()

    def _report_download_failures(self) -> None:
        if not self.download_failures:
            self.status.clear("DOWNLOAD_FAILED")
            return
        names = sorted(self.download_failures)
        listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        self.status.set("Sync", "Warning", "DOWNLOAD_FAILED",
                        f"content of {listed} could not be copied from the parent {self.parent.endpoint}: "
                        f"{self.download_failures[names[0]]}. Everything else syncs; these are asked again with "
                        "backoff (at most every 30 minutes) and at every sync-now. If it lasts, check the image at "
                        "the parent (a damaged or incomplete push, or a token without read access to it) and push "
                        "it there again.")


async def _until_set(work, event: asyncio.Event) -> asyncio.Future | None:
    """Run `work` until it finishes (its future is returned) or `event` is set first (`work` is cancelled: None)."""
    task = asyncio.ensure_future(work)
    interrupt = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({task, interrupt}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        interrupt.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    return None if task.cancelled() else task
