"""Parent to child (SPEC 7.2): apply the parent's events, or reconcile by listing, copying manifests
(of an index, the platforms this site runs: `platforms`), blobs and referrers, each verified against its digest
before it becomes visible. Deletes happen only on a positive signal."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

import aiohttp

from connected_registry.auth.permissions import repository_in_scope
from connected_registry.oci.digest import digest_of, is_digest, parse_digest
from connected_registry.oci.errors import OciError
from connected_registry.oci.manifest import ParsedManifest, parse_manifest
from connected_registry.oci.platforms import Platform, kept_by_platform, left_out
from connected_registry.storage import RegistryStore
from connected_registry.storage.records import ResumableDownload
from connected_registry.sync.bandwidth import bytes_arrived, narrow_receive_buffer
from connected_registry.sync.budget import BudgetExceeded, WalkBudget
from connected_registry.sync.fills import BlobFill, Spool
from connected_registry.sync.left_out import LeftOutCount
from connected_registry.sync.parent_client import (ParentClient, ParentError, ParentManifest, ParentProtocolError,
                                                   ParentRefused, ParentUnreachable)

log = logging.getLogger("connected_registry.sync")

_EMPTY_STREAM_CHUNK = b""
BLOB_CONCURRENCY = 3
RESUMES_PER_TRANSFER = 2  # a transfer that breaks off goes on at once with Range, this many times


class _Empty:
    async def readany(self) -> bytes:
        return _EMPTY_STREAM_CHUNK


class _Counted:
    """A blob's body stream that adds to the downloaded bytes as chunks arrive, so progress shows inside a big blob;
    each chunk within the link's byte budget, a fill a device waits for first (sync/bandwidth.py)."""

    def __init__(self, response, downstream: "Downstream", counter: str, fill: BlobFill,
                 spool: Spool | None = None) -> None:
        self.response, self.downstream, self.counter, self.fill = response, downstream, counter, fill
        self.spool = spool  # where the fill's readers read the bytes, when the store keeps no local file
        self.receive_buffer: int | None = None  # set once the link's budget narrowed the connection
        self.paid = 0  # bytes of the body the budget has counted: what arrived, read or not
        self.read = 0  # bytes of the body read

    async def readany(self) -> bytes:
        budget = self.downstream.parent.budget
        metered = budget.chunk_bytes()
        if metered and metered != self.receive_buffer:  # metered now (also when a limit came mid-transfer)
            self.receive_buffer = narrow_receive_buffer(self.response, metered)
        content = self.response.content
        chunk = await (content.read(metered) if metered else content.readany())
        self.read += len(chunk)
        # a chunk read now may have been paid for already, as it arrived: never pay for it twice
        arrived = max(bytes_arrived(self.response), self.read) if metered else self.read
        await budget.spend(max(arrived - self.paid, 0), "received", urgent=self.fill.urgent)
        self.paid = max(arrived, self.paid)
        setattr(self.downstream, self.counter, getattr(self.downstream, self.counter) + len(chunk))
        if self.spool is not None:
            await self.spool.write(chunk)
        return chunk

    def release(self) -> None:
        """A narrowed connection is closed, not reused: its small buffer would slow an unmetered transfer."""
        if self.receive_buffer is None:
            self.response.release()
        else:
            self.response.close()


class Downstream:
    def __init__(self, store: RegistryStore, parent: ParentClient, repositories: Callable[[], list[str]],
                 platforms: Callable[[], list[Platform] | None] = lambda: None) -> None:
        self.store = store
        self.parent = parent
        self.repositories = repositories  # the live scope, read at each check
        self.platforms = platforms  # the live `platforms` setting (None: every platform), read at each index
        self.bytes_downloaded = 0
        self.bytes_on_demand = 0
        self.left_out = LeftOutCount()
        self.fills: dict[str, BlobFill] = {}  # digest -> the one transfer in progress
        self.after_on_demand_fill: Callable[[str], Awaitable[None]] | None = None  # the disk budget's check

    def in_scope(self, repository: str) -> bool:
        return repository_in_scope(self.repositories(), repository)

    # --- content ------------------------------------------------------------------------------------

    async def copy_manifest(self, repository: str, reference: str, tag: str | None = None, origin: str | None = None,
                            seen: set | None = None, budget: WalkBudget | None = None,
                            left_out: set[str] | None = None) -> str | None:
        """Copy a manifest (and what it needs) from the parent; returns its digest, None if the parent lacks it.
        One copy fetches each distinct manifest once (`seen`), within one budget (BudgetExceeded past it).
        `left_out`: what the index being copied leaves out; a manifest whose subject is there joins it, uncopied."""
        seen = seen if seen is not None else set()
        budget = budget or WalkBudget()
        if reference in seen:
            return reference  # a digest this copy has fetched already
        budget.spend()
        fetched = await self.parent.get_manifest(repository, reference)
        if fetched is None:
            return None
        digest = verified_digest(fetched, repository, reference)
        if digest in seen:
            return digest
        parsed = parse_manifest(fetched.body, fetched.media_type)
        if left_out is not None and parsed.subject in left_out:
            left_out.add(digest)
            return None
        seen.add(digest)
        children_left_out = None
        if self._to_walk(repository, digest, parsed):
            children_left_out = await self._copy_children(repository, parsed, origin, seen, budget)
            blobs = list(dict.fromkeys(blob.digest for blob in parsed.blobs))
            budget.spend(len(blobs))
            with budget.transferring():
                await self._ensure_blobs(repository, blobs)
        await self.store.put_manifest(repository, tag or digest, fetched.body, fetched.media_type, origin=origin,
                                      from_parent=True, left_out=children_left_out)
        await self.copy_referrers(repository, digest, origin, seen, budget)
        return digest

    def _to_walk(self, repository: str, digest: str, parsed: ParsedManifest) -> bool:
        """Whether what the manifest names must be copied: it is not here, or not whole (stored on demand), or it
        is an index whose children left out by design include a platform this site runs now."""
        if self.store.get_manifest(repository, digest) is None or self.store.incomplete(repository, digest):
            return True
        if not parsed.manifests:
            return False
        return bool(self.store.left_out_children(repository, digest)
                    & kept_by_platform(parsed.manifests, self.platforms()))

    async def _copy_children(self, repository: str, parsed: ParsedManifest, origin: str | None, seen: set,
                             budget: WalkBudget) -> frozenset[str]:
        """Copy the child manifests of an index that this site runs (all of them without `platforms`); returns
        those it leaves out, counted (what the filter saved)."""
        leaving = left_out(parsed.manifests, self.platforms())
        for child in dict.fromkeys(entry.digest for entry in parsed.manifests):
            if child not in leaving:
                with budget.deeper():
                    await self.copy_manifest(repository, child, origin=origin, seen=seen, budget=budget,
                                             left_out=leaving)
        await self.left_out.count(self.parent, self.store, repository, leaving, budget)
        return frozenset(leaving)

    async def copy_referrers(self, repository: str, digest: str, origin: str | None, seen: set,
                             budget: WalkBudget | None = None) -> None:
        """Referrers from the parent's referrers API or, where it has none, its referrers tag schema."""
        budget = budget or WalkBudget()
        budget.spend()
        referrers = await self.parent.referrers(repository, digest)
        fallback = None
        if referrers is None:
            fallback_tag = digest.replace(":", "-", 1)
            budget.spend()
            fallback = await self.parent.get_manifest(repository, fallback_tag)
            if fallback is None:
                return
            try:
                manifests = json.loads(fallback.body).get("manifests", [])
            except (ValueError, AttributeError):
                return
            referrers = [m for m in manifests if isinstance(m, dict)] if isinstance(manifests, list) else []
        for referrer in referrers:
            child = referrer.get("digest")
            if isinstance(child, str) and is_digest(child) and child not in seen:
                with budget.deeper():
                    await self.copy_manifest(repository, child, origin=origin, seen=seen, budget=budget)
        if fallback is not None:  # keep the schema's index too, so children of a plain parent find it
            await self.store.put_manifest(repository, digest.replace(":", "-", 1), fallback.body,
                                          fallback.media_type, origin=origin, from_parent=True)

    async def _ensure_blobs(self, repository: str, digests: list[str]) -> None:
        """A few blobs at a time: one finishing (verify, fsync) while the next ones stream."""
        limit = asyncio.Semaphore(BLOB_CONCURRENCY)

        async def one(digest: str) -> None:
            async with limit:
                await self.ensure_blob(repository, digest)

        try:
            async with asyncio.TaskGroup() as tasks:
                for digest in dict.fromkeys(digests):
                    tasks.create_task(one(digest))
        except BaseExceptionGroup as group:  # callers expect the error itself (ParentError...)
            raise first_error(group) from None

    async def ensure_blob(self, repository: str, digest: str) -> None:
        """A blob of a manifest of `repository` being copied from the parent, which vouches that it is there."""
        if self.store.blob_size(repository, digest) is not None:
            return
        if await self.store.link_blob(repository, digest):
            return  # present in another repository: never transferred again
        fill = self.join_fill(repository, digest)
        try:
            await fill.wait_done()
        finally:
            fill.leave()
        if fill.error is not None:
            raise fill.error
        if fill.repository != repository:
            await self.store.link_blob(repository, digest)

    def join_fill(self, repository: str, digest: str, on_demand: bool = False) -> BlobFill:
        """The one transfer of `digest` from the parent, started now for `repository` if none runs (single flight).
        A caller joins one running for another repository only when it knows the blob is in `repository` too: a
        sync copying a manifest of `repository` does (the parent's manifest vouches), the pull-through layer
        decides it for a client's miss (sync/ondemand.py). The caller must `leave()` it; the transfer stops when
        nobody waits for it any more."""
        fill = self.fills.get(digest)
        if fill is None:
            fill = self.fills[digest] = BlobFill(repository, digest)
            fill.task = asyncio.create_task(self._transfer(fill, on_demand), name=f"blob transfer {digest[:19]}")
        fill.waiters += 1
        fill.urgent = fill.urgent or on_demand  # a device waits for it now: it goes before background transfers
        return fill

    async def _transfer(self, fill: BlobFill, on_demand: bool) -> None:
        error: BaseException | None = None
        try:
            async with self.store.coordination.single_flight(fill.digest):  # one transfer across the replicas
                if self.store.blob_size(fill.repository, fill.digest) is None:  # else one stored it as this waited
                    await self._download(fill, on_demand)
        except asyncio.CancelledError:
            error = ParentUnreachable(f"the transfer of {fill.digest} was stopped; it resumes with the next request")
            raise
        except Exception as failure:  # noqa: BLE001 - handed to every waiter
            error = failure
            missing = isinstance(failure, ParentError) and failure.status == 404
            log.log(logging.INFO if missing else logging.WARNING, "transfer of %s@%s from the parent failed: %s",
                    fill.repository, fill.digest, failure)
        finally:
            self.fills.pop(fill.digest, None)
            fill.finish(error)
        if on_demand and self.after_on_demand_fill is not None:
            await self.after_on_demand_fill(fill.digest)

    async def _download(self, fill: BlobFill, on_demand: bool) -> None:
        repository, digest = fill.repository, fill.digest
        session = await self.store.resumable_session(repository, digest)
        counter = "bytes_on_demand" if on_demand else "bytes_downloaded"  # counted as chunks arrive (progress)
        spool = Spool(self.store.data_dir, fill) if session.path is None and not session.offset else None
        try:
            for attempt in range(1 + RESUMES_PER_TRANSFER):
                try:
                    response = await self.parent.open_blob(repository, digest, session.offset)
                except ParentError as error:
                    if error.status != 416 or not session.offset:
                        raise
                    break  # a Range past the end: every byte arrived before a restart, only the verification is left
                if spool is not None:
                    spool.position = session.offset  # a resumed transfer: the bytes from there come again
                body = _Counted(response, self, counter, fill, spool)
                try:
                    session = await self._restart_if_range_ignored(fill, session, response)
                    if not fill.opened:
                        readable = session.path if spool is None else spool.fd  # None: readers wait for the store
                        fill.start_reading(readable, session.offset, _announced_size(response, session.offset))
                    try:
                        await self.store.uploads.append(session, body, None, None if spool else fill.progress)
                    except (aiohttp.ClientError, TimeoutError) as cut:
                        if attempt == RESUMES_PER_TRANSFER:
                            raise ParentUnreachable(f"the transfer of {digest} from the parent broke off at "
                                                    f"{session.offset} bytes: {cut!r}") from None
                        log.info("transfer of %s@%s broke off at %d bytes (%r): resuming with Range", repository,
                                 digest, session.offset, cut)
                        continue
                finally:
                    body.release()
                break
            await self._verify_and_store(fill, session, on_demand)
        finally:
            if spool is not None:
                spool.close()

    async def _restart_if_range_ignored(self, fill: BlobFill, session, response):
        """A parent that ignored Range (200 to a resumed GET) sends the whole blob: the session starts over, unless
        readers have the bytes so far (they cannot start over with us)."""
        if response.status != 200 or not session.offset:
            return session
        if fill.opened:
            raise ParentProtocolError(f"parent ignored the Range request resuming {fill.digest}")
        await self.store.uploads.cancel(session)
        return await self.store.resumable_session(fill.repository, fill.digest, fresh=True)

    async def _verify_and_store(self, fill: BlobFill, session, on_demand: bool) -> None:
        try:
            await self.store.uploads.complete(session, _Empty(), fill.digest, self.store.origin, on_demand=on_demand,
                                              verified=fill.mark_verified)
        except OciError as error:
            raise ParentProtocolError(f"blob {fill.repository}@{fill.digest} from the parent failed verification: "
                                      f"{error.message}") from None
        finally:
            await self.store.control.forget_transfer_session(ResumableDownload(fill.digest))

    # --- events -------------------------------------------------------------------------------------

    async def apply_event(self, event: dict) -> None:
        repository, kind = event.get("repository", ""), event.get("type")
        digest, tag, origin = event.get("digest", ""), event.get("tag"), event.get("origin")
        if not self.in_scope(repository) or not is_digest(digest):
            return
        if tag and self.store.undelivered_tag(repository, tag):
            return  # our own write of this tag goes up first; the parent's answer to it comes back as an event
        if kind == "TagSet" and tag:
            await self.copy_manifest(repository, digest, tag=tag, origin=origin)
        elif kind == "ManifestPut" and self._wanted_untagged(repository, event.get("subject")):
            await self.copy_manifest(repository, digest, origin=origin)
        elif kind == "TagDeleted" and tag:
            record = self.store.get_manifest(repository, tag)
            if record is not None and record.digest == digest:
                await self.store.delete_manifest(repository, tag, origin=origin, from_parent=True)
        elif kind == "ManifestDeleted":
            if self.store.get_manifest(repository, digest) is not None:
                await self.store.delete_manifest(repository, digest, origin=origin, from_parent=True)

    def _wanted_untagged(self, repository: str, subject: str | None) -> bool:
        """Whether a manifest put without a tag comes down on its own event. With `platforms` only a referrer of
        content here does: the others come with the index or tag that names them, whose walk chooses the platforms
        (an index's children are put before it, so their events come first, when nothing says which are wanted)."""
        if self.platforms() is None:
            return True
        return subject is not None and self.store.get_manifest(repository, subject) is not None

    # --- full reconcile -------------------------------------------------------------------------------

    async def reconcile_repository(self, repository: str) -> list[str]:
        """Make the tags of one repository match the parent's complete listing. A tag whose content cannot be
        copied (see `content_failure`) does not stop the others: the reasons are returned."""
        tags = await self.parent.list_tags(repository)
        if tags is None:
            return []  # unknown at the parent: nothing to copy, and not a signal to delete
        failures = []
        for tag in tags:
            if self.store.undelivered_tag(repository, tag):
                continue
            try:
                fetched_digest = await self.copy_manifest(repository, tag, tag=tag)
            except Exception as error:
                if not content_failure(error):
                    raise
                failures.append(f"{repository}:{tag}: {error}")
                continue
            if fetched_digest is None:
                log.info("tag %s:%s vanished at the parent during the reconcile", repository, tag)
        present = set(tags)
        for local in self.store.list_tags(repository, None, None):
            if local not in present and not _is_referrers_tag(local) and not self.store.undelivered_tag(repository, local):
                await self.store.delete_manifest(repository, local, from_parent=True)
        return failures


def content_failure(error: BaseException) -> bool:
    """A failure of one piece of content, not of the link: the parent refused it (403, 404...), sent bytes that
    fail verification or parsing, or more of it than one copy's budget. The rest of a sync goes on without it; a
    link, token or disk failure stops it."""
    if isinstance(error, BudgetExceeded):
        return True
    if isinstance(error, OciError):
        return not error.code.startswith("DISK_")
    return isinstance(error, (ParentRefused, ParentProtocolError))


def verified_digest(fetched: ParentManifest, repository: str, reference: str) -> str:
    """The digest of manifest bytes from the parent, checked against the reference and the parent's header."""
    algorithm = parse_digest(reference).algorithm if is_digest(reference) else "sha256"
    digest = digest_of(fetched.body, algorithm)
    if (is_digest(reference) and digest != reference) or (fetched.digest and fetched.digest.startswith(algorithm)
                                                           and fetched.digest != digest):
        raise ParentProtocolError(f"parent sent manifest bytes for {repository}:{reference} that do not match "
                                  f"their digest {fetched.digest or reference}")
    return digest


def _announced_size(response, offset: int) -> int | None:
    """The blob's whole size as the parent's answer states it (Content-Range of a 206, else Content-Length)."""
    if response.status == 206:
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        if total.isdigit():
            return int(total)
        return offset + response.content_length if response.content_length is not None else None
    return response.content_length


def first_error(group: BaseExceptionGroup) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _is_referrers_tag(tag: str) -> bool:
    return tag.startswith(("sha256-", "sha512-"))
