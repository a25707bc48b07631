"""On-demand pull-through (SPEC 8): a miss in an in-scope repository is filled from the parent while the
client waits, and the store keeps it within the disk budget.

- Manifests are small: fetched (one fetch per repository and reference at a time), verified, stored with
  the tag when asked by tag, then served as any stored manifest; their referrers follow in the background.
- Blobs stream: the one transfer per digest (Downstream's fills, shared with the sync) writes a partial
  file that every client reads as bytes land; the digest is verified before the last byte goes out.
- The parent gets `parent.connectTimeout` + `parent.firstByteTimeout` to start answering; after that the
  client gets the usual 404 naming the parent and the timeouts. `onDemand: false` never asks;
  `"windowOnly"` asks only inside a sync window.
- A platform the sync leaves out (`platforms`) is a miss like any other; where it may not be filled, the 404
  names the `platforms` setting, so whoever reads it knows the image is there for the other platforms.

This is a `Content` (storage.content) wrapped around the local one, as distribution's registry/proxy wraps its
stores: the API calls it as it calls the local content, and imports nothing of sync. Which repository a blob may
be served in (issue 14: never on a digest alone) is decided here, in `_belongs` and `_join`, and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from connected_registry.durations import duration_seconds
from connected_registry.oci.digest import is_digest
from connected_registry.oci.errors import OciError
from connected_registry.oci.manifest import parse_manifest
from connected_registry.storage.cache import budget_bytes, evict, is_on_demand, on_demand_bytes, touch
from connected_registry.storage.content import Blob, Content, StoredBlob
from connected_registry.storage.manifest_cache import ManifestRecord
from connected_registry.sync.downstream import Downstream, verified_digest
from connected_registry.sync.fills import BlobFill, FillReader
from connected_registry.sync.parent_client import ParentError

log = logging.getLogger("connected_registry.ondemand")


@dataclass
class CacheStats:
    """The counters /metrics and the status document read (SPEC 4, 12)."""

    hits: int = 0  # requests in a pull-through repository answered from what was here
    misses: int = 0  # requests that had to ask the parent
    evictions: int = 0
    bytes_evicted: int = 0


class PullThrough:
    """`Content` that looks in `local` first and, on a miss in a repository filled on demand, asks the parent."""

    def __init__(self, local: Content, downstream: Downstream, settings, in_window: Callable[[], bool],
                 refused: Callable[[], bool] = lambda: False) -> None:
        """`in_window`: whether the sync window is open now; `refused`: whether the parent refused this
        instance (deactivated, a clone of an active one, an incompatible mode): then it fills nothing either."""
        self.local, self.downstream, self.in_window, self.refused = local, downstream, in_window, refused
        self.store = downstream.store
        self.parent = downstream.parent
        self.stats = CacheStats()
        self._manifest_fetches: dict[tuple[str, str], asyncio.Task] = {}
        self._background: set[asyncio.Task] = set()
        downstream.after_on_demand_fill = self._keep_within_budget
        self.configure(settings)

    def configure(self, settings) -> None:
        """`onDemand`, `cache.maxBytes`, `platforms` and the parent's timeouts from a newly applied configuration."""
        self.on_demand = settings.onDemand
        self.platforms = settings.platforms
        self.max_bytes = settings.cache.maxBytes
        self.timeouts = f"parent.connectTimeout {settings.parent.connectTimeout} and " \
                        f"parent.firstByteTimeout {settings.parent.firstByteTimeout}"
        self.open_timeout = duration_seconds(settings.parent.connectTimeout) + \
            duration_seconds(settings.parent.firstByteTimeout)

    def allowed(self, repository: str) -> bool:
        if self.on_demand is False or (self.on_demand == "windowOnly" and not self.in_window()) or self.refused():
            return False
        return self.downstream.in_scope(repository)

    async def close(self) -> None:
        tasks = [*self._background, *self._manifest_fetches.values(),
                 *(fill.task for fill in self.downstream.fills.values() if fill.task)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- Content: what the read routes call ------------------------------------------------------------

    async def get_manifest(self, repository: str, reference: str) -> ManifestRecord | None:
        record = await self.local.get_manifest(repository, reference)
        if record is not None:
            self._served(repository)
            return record
        if await self._fill_manifest(repository, reference):
            return await self.local.get_manifest(repository, reference)
        return None

    def stat_blob(self, repository: str, digest: str) -> StoredBlob | None:
        return self.local.stat_blob(repository, digest)

    async def open_blob(self, repository: str, digest: str) -> Blob | None:
        blob = self.local.stat_blob(repository, digest)
        if blob is not None:
            self._served(repository, digest)
            return blob
        arriving = await self._fill_blob(repository, digest)
        return arriving if arriving is not None else self.local.stat_blob(repository, digest)

    async def referrers(self, repository: str, subject: str, artifact_type: str | None) -> list[dict]:
        """Ours and, while the parent is reachable, the parent's too (SPEC 8)."""
        descriptors = await self.local.referrers(repository, subject, artifact_type)
        known = {descriptor["digest"] for descriptor in descriptors}
        for descriptor in await self._parent_referrers(repository, subject):
            if descriptor.get("digest") not in known and (artifact_type is None
                                                          or descriptor.get("artifactType") == artifact_type):
                known.add(descriptor.get("digest"))
                descriptors.append(descriptor)
        return descriptors

    def repository_exists(self, repository: str) -> bool:
        return self.local.repository_exists(repository)

    def list_tags(self, repository: str, limit: int | None, last: str | None) -> list[str]:
        return self.local.list_tags(repository, limit, last)

    def list_repositories(self, limit: int | None, last: str | None) -> list[str]:
        return self.local.list_repositories(limit, last)

    # --- hits ---------------------------------------------------------------------------------------

    def _served(self, repository: str, digest: str | None = None) -> None:
        """Content that was here answered a request: a hit, and a blob filled on demand is used again."""
        if not self.downstream.in_scope(repository):
            return
        self.stats.hits += 1
        if digest is not None and is_on_demand(self.store, digest):
            self._in_background(touch(self.store, digest))

    # --- manifests ----------------------------------------------------------------------------------

    async def _fill_manifest(self, repository: str, reference: str) -> bool:
        """Fill a missing manifest; False when this repository is not filled on demand (now). A parent that
        lacks it, fails or is too slow gives MANIFEST_UNKNOWN saying so."""
        if not self.allowed(repository):
            left_out = self._left_out_here(repository, reference)
            if left_out is not None:
                raise left_out
            return False
        self.stats.misses += 1
        what = f"manifest {reference}"
        key = (repository, reference)
        task = self._manifest_fetches.get(key)
        if task is None:
            task = self._manifest_fetches[key] = asyncio.create_task(self._fetch_manifest(repository, reference))
            task.add_done_callback(lambda done: self._manifest_fetches.pop(key, None) and (
                done.cancelled() or done.exception()))  # a failure after every client timed out: retrieved
        try:
            async with asyncio.timeout(self.open_timeout):
                digest = await asyncio.shield(task)
        except TimeoutError:
            raise self._timed_out("MANIFEST_UNKNOWN", what, repository) from None
        except (ParentError, OciError, OSError, aiohttp.ClientError) as error:
            raise self._failed("MANIFEST_UNKNOWN", what, repository, error) from None
        if digest is None:
            raise self._not_at_parent("MANIFEST_UNKNOWN", what, repository)
        return True

    async def _fetch_manifest(self, repository: str, reference: str) -> str | None:
        fetched = await self.parent.get_manifest(repository, reference)
        if fetched is None:
            return None
        digest = verified_digest(fetched, repository, reference)
        await self.store.put_manifest(repository, digest if is_digest(reference) else reference, fetched.body,
                                      fetched.media_type, on_demand=True)
        log.info("filled %s:%s (%s) from the parent on demand", repository, reference, digest)
        self._in_background(self._bring_referrers(repository, digest))
        return digest

    async def _bring_referrers(self, repository: str, digest: str) -> None:
        try:
            await self.downstream.copy_referrers(repository, digest, None, {digest})
        except Exception as error:  # noqa: BLE001 - the next sync (or the next miss) brings them
            log.warning("referrers of %s@%s not brought from the parent: %s", repository, digest, error)

    async def _parent_referrers(self, repository: str, digest: str) -> list[dict]:
        """The parent's referrers of `digest`, to merge with ours; empty when it cannot answer in time."""
        if not self.allowed(repository):
            return []
        try:
            async with asyncio.timeout(self.open_timeout):
                return await self.parent.referrers(repository, digest) or []
        except (ParentError, TimeoutError, OSError, ValueError, aiohttp.ClientError) as error:
            log.info("referrers of %s@%s answered without the parent's: %s", repository, digest, error)
            return []

    def _left_out_here(self, repository: str, reference: str) -> OciError | None:
        """MANIFEST_UNKNOWN naming `platforms`, for a manifest an index here leaves out by design when it may not
        be filled now; None for any other manifest."""
        index = self.store.left_out_by(repository, reference) if is_digest(reference) and self.platforms else None
        if index is None:
            return None
        record = self.store.get_manifest(repository, index)
        entries = parse_manifest(record.body, record.media_type).manifests if record else []
        platform = next((f" ({entry.platform})" for entry in entries if entry.digest == reference and entry.platform),
                        "")
        if self.refused():
            why = "the parent refused this instance"
        elif self.on_demand is False:
            why = "`onDemand` is false"
        else:
            why = "`onDemand` is \"windowOnly\" and the sync window is closed"
        return OciError("MANIFEST_UNKNOWN", f"manifest {reference}{platform} of {repository} is not synced here: this "
                        f"instance runs only the platforms {', '.join(self.platforms or [])} (setting `platforms`) "
                        f"and {why}: add the platform to `platforms`, or set `onDemand` to true to fetch other "
                        "platforms when they are asked for")

    # --- blobs ----------------------------------------------------------------------------------------

    async def _fill_blob(self, repository: str, digest: str) -> FillReader | None:
        """A reader of the blob as it arrives from the parent; None when it is not filled on demand here, or
        is in the store by now. BLOB_UNKNOWN when the parent lacks it in `repository`, fails or is too slow to
        start. What is here (or on its way) for another repository is served in this one only once it is known
        to belong here too (`_belongs`): a digest alone opens nothing."""
        if not self.allowed(repository):
            return None
        what = f"blob {digest}"
        belongs = await self._belongs(repository, digest)
        if belongs and await self.store.link_blob(repository, digest):
            self.stats.hits += 1
            return None  # here already, in another repository
        self.stats.misses += 1
        fill = self._join(repository, digest, belongs)
        try:
            async with asyncio.timeout(self.open_timeout):
                await fill.wait_opened()
            reader = fill.reader()
            if reader is None:  # finished already, or the parent did not say the size: wait for the store
                await fill.wait_done()
        except TimeoutError:
            fill.leave()
            raise self._timed_out("BLOB_UNKNOWN", what, repository) from None
        except BaseException:
            fill.leave()
            raise
        if reader is None:
            fill.leave()
            if fill.error is not None:
                raise self._failed("BLOB_UNKNOWN", what, repository, fill.error)
            await self._link_after(fill, repository)
            return None
        reader.on_close = lambda finished: self._in_background(self._link_after(finished, repository))
        return reader

    # --- the repository boundary (issue 14): a blob is served in R only once it is known to be in R --------

    async def _belongs(self, repository: str, digest: str) -> bool:
        """Whether the blob is in `repository` without a transfer for it saying so: a manifest of `repository` here
        references it, or (when it is here or on its way for another repository) the parent answers a HEAD for
        `repository`'s blob. A blob neither here nor on its way needs no question: its transfer's GET asks."""
        if self.store.referenced_blob(repository, digest):
            return True
        running = self.downstream.fills.get(digest)
        if not self.store.holds_blob(digest) and (running is None or running.repository == repository):
            return False
        what = f"blob {digest}"
        try:
            async with asyncio.timeout(self.open_timeout):
                return await self.parent.has_blob(repository, digest, scope=self.parent.pull_scope(repository))
        except TimeoutError:
            raise self._timed_out("BLOB_UNKNOWN", what, repository) from None
        except (ParentError, OSError, aiohttp.ClientError) as error:
            raise self._failed("BLOB_UNKNOWN", what, repository, error) from None

    def _join(self, repository: str, digest: str, belongs: bool) -> BlobFill:
        """The one transfer of the blob (single flight), started now if none runs. One running for another
        repository (its GET asked the parent for that repository's blob) is joined only when the blob `belongs`
        in this one too."""
        running = self.downstream.fills.get(digest)
        if running is not None and running.repository != repository and not belongs:
            raise self._not_at_parent("BLOB_UNKNOWN", f"blob {digest}", repository)
        return self.downstream.join_fill(repository, digest, on_demand=True)

    async def _link_after(self, fill: BlobFill, repository: str) -> None:
        """Once stored, a blob a client read from a fill counts as used now; and if the fill ran for another
        repository's request (joined because the blob belongs in this one too), it becomes visible here."""
        used = self.store.clock()
        await fill.wait_done()
        if fill.error is not None:
            return
        if fill.repository != repository:
            await self.store.link_blob(repository, fill.digest)
        await touch(self.store, fill.digest, used)

    async def _keep_within_budget(self, digest: str) -> None:
        budget = budget_bytes(self.max_bytes, self.store.data_dir)
        evicted = await evict(self.store, budget, busy=set(self.downstream.fills))
        self.stats.evictions += len(evicted)
        self.stats.bytes_evicted += sum(size for _, size in evicted)

    # --- reporting --------------------------------------------------------------------------------------

    def document(self) -> dict:
        return {
            "onDemand": self.on_demand,
            "maxBytes": budget_bytes(self.max_bytes, self.store.data_dir),
            "onDemandBytes": on_demand_bytes(self.store),
            "hits": self.stats.hits,
            "misses": self.stats.misses,
            "bytesFetchedOnDemand": self.downstream.bytes_on_demand,
            "evictions": self.stats.evictions,
            "bytesEvicted": self.stats.bytes_evicted,
            "transfersInProgress": len(self.downstream.fills),
        }

    # --- helpers ----------------------------------------------------------------------------------------

    def _in_background(self, work) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _not_at_parent(self, code: str, what: str, repository: str) -> OciError:
        return OciError(code, f"{what} is not in repository {repository}, here or at the parent {self.parent.endpoint}")

    def _timed_out(self, code: str, what: str, repository: str) -> OciError:
        return OciError(code, f"{what} is not in repository {repository}, and the parent {self.parent.endpoint} did "
                              f"not answer within {self.timeouts}: pull again once the parent is reachable")

    def _failed(self, code: str, what: str, repository: str, error: BaseException) -> OciError:
        if isinstance(error, ParentError) and error.status == 404:
            return self._not_at_parent(code, what, repository)
        if isinstance(error, TimeoutError) or getattr(error, "timed_out", False):
            return self._timed_out(code, what, repository)
        return OciError(code, f"{what} is not in repository {repository}, and the parent {self.parent.endpoint} "
                              f"could not provide it: {error or type(error).__name__}")
