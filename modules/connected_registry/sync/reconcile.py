"""Full reconcile (SPEC 7.2): every repository in scope made to match the parent's listing, at first, after
the feed expired, daily, when the scope changes, at every sync-now (whose progress it shows) and every minute
against a plain parent; the registry sync a trigger owes is one of them (registry_sync.py). Content the parent
could not give does not hold up the rest: it goes into the download-failure ledger (ledger.py) and is asked
again with its backoff."""

from __future__ import annotations

import asyncio
import logging
import time

from connected_registry.auth.permissions import repository_pattern_matches
from connected_registry.sync.downstream import content_failure
from connected_registry.sync.ledger import DownloadFailures
from connected_registry.sync.operation import SyncOperation
from connected_registry.sync.state import SyncContext

log = logging.getLogger("connected_registry.sync")

RECONCILE_EVERY_SECONDS = 24 * 3600


class Reconcile:
    def __init__(self, sync: SyncContext) -> None:
        self.sync = sync
        self.wanted = asyncio.Event()  # interrupts a long poll: the scope changed, or syncNow
        self.last = time.monotonic()  # a restart with a cursor follows the feed; the daily reconcile counts from here
        self.failures = DownloadFailures.from_data(self._saved_failures())  # kept across restarts
        self.report_download_failures()

    def due(self) -> bool:
        return time.monotonic() - self.last > RECONCILE_EVERY_SECONDS

    def want(self) -> None:
        """A full reconcile at once: the feed's long poll ends for it (new repositories in scope, a sync-now)."""
        self.last = -RECONCILE_EVERY_SECONDS
        self.wanted.set()

    async def repositories_in_scope(self) -> list[str]:
        sync = self.sync
        exact = [pattern for pattern in sync.identity.repositories if not pattern.endswith("*")]
        patterns = [pattern for pattern in sync.identity.repositories if pattern.endswith("*")]
        found = set(exact)
        if patterns:
            catalog = await sync.parent.catalog()
            if catalog is None:
                sync.status.set("CATALOG_REFUSED", patterns=", ".join(patterns))
            else:
                sync.status.clear("CATALOG_REFUSED")
                found |= {name for name in catalog if any(repository_pattern_matches(p, name) for p in patterns)}
        return sorted(found)

    async def reconcile_all(self) -> None:
        sync = self.sync
        operation = sync.running_operation()
        if operation is not None:
            operation.start(sync.clock())
        await sync.registry.begin()
        sync.state.syncing = True
        try:
            repositories = await self.repositories_in_scope()
            await self._reconcile_each(repositories, operation)
            for repository in set(self.failures.reasons) - set(repositories):  # left the scope
                await self.note_download_failures(repository, [])
            self.failures.tried(time.monotonic())  # this reconcile was a try: the next retry waits its backoff
        finally:
            sync.state.syncing = False
        incomplete = self._incomplete(repositories)
        await sync.registry.finish(content_failed=incomplete is not None)  # first: who sees the operation end sees it
        if operation is not None:
            operation.finish(sync.clock(), incomplete)
        sync.sync_works()
        if sync.state.operation is None or sync.state.operation.state != "Queued":  # a sync-now meanwhile: again
            self.last = time.monotonic()
        sync.round_ended()
        sync.state.syncs += 1

    async def _reconcile_each(self, repositories: list[str], operation: SyncOperation | None) -> None:
        """One repository after the other; a sync-now shows which one, and how many are done."""
        if operation is not None:
            operation.repositoriesTotal, operation.repositoriesDone = len(repositories), 0
        for repository in repositories:
            if operation is not None:
                operation.repository = repository
            await self.reconcile_repository(repository)
            if operation is not None:
                operation.repositoriesDone += 1

    def _incomplete(self, repositories: list[str]) -> RuntimeError | None:
        """Why a sync-now failed: the repositories of this reconcile that could not be copied whole."""
        failed = sorted(set(repositories) & set(self.failures.reasons))
        if not failed:
            return None
        return RuntimeError(f"{len(failed)} of {len(repositories)} repositories could not be copied whole "
                            f"({', '.join(failed[:5])}): {self.failures.reasons[failed[0]]}")

    async def reconcile_repository(self, repository: str) -> None:
        try:
            failures = await self.sync.downstream.reconcile_repository(repository)
        except Exception as error:
            if not content_failure(error):
                raise
            failures = [f"{repository}: {error}"]  # e.g. its tag list refused to the sync token
        await self.note_download_failures(repository, failures)

    # --- content the parent could not give (a broken image there must not hold up the rest) -------------------

    async def retry_failed_downloads(self, force: bool = False) -> None:
        """Reconcile the repositories whose content failed, when their backoff has passed (or `force`)."""
        if not self.failures.due(time.monotonic(), force):
            return
        for repository in sorted(self.failures.reasons):
            if self.sync.downstream.in_scope(repository):
                log.info("retrying the content of %s that the parent could not give", repository)
                await self.reconcile_repository(repository)
            else:
                await self.note_download_failures(repository, [])
        self.failures.retried(time.monotonic())

    async def note_download_failures(self, repository: str, failures: list[str]) -> None:
        """What a copy of `repository` found (no failures: it is whole), logged, kept, and reported."""
        if failures:
            self.sync.state.errors += 1
            for failure in failures:
                log.warning("could not copy from the parent: %s", failure)
        elif repository in self.failures:
            log.info("the content of %s is whole again", repository)
        if self.failures.record(repository, failures, time.monotonic()):
            await self._save_failures()
        self.report_download_failures()

    def report_download_failures(self) -> None:
        reasons = self.failures.reasons
        if not reasons:
            self.sync.status.clear("DOWNLOAD_FAILED")
            return
        names = sorted(reasons)
        listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        self.sync.status.set("DOWNLOAD_FAILED", repositories=listed, endpoint=self.sync.parent.endpoint,
                             failure=reasons[names[0]])

    def _saved_failures(self) -> dict[str, str]:
        return dict(self.sync.store.control.state().download_failures)

    async def _save_failures(self) -> None:
        await self.sync.store.control.update_state(download_failures=self.failures.to_data())
