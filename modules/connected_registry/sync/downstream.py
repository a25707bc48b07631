"""Parent to child (SPEC 7.2): apply the parent's events, or reconcile by listing, copying manifests
(every platform of an index), blobs and referrers, each verified against its digest before it
becomes visible. Deletes happen only on a positive signal."""

from __future__ import annotations

import asyncio
import json
import logging

from connected_registry.auth.permissions import repository_in_scope
from connected_registry.oci.digest import digest_of, is_digest, parse_digest
from connected_registry.oci.errors import OciError
from connected_registry.oci.manifest import parse_manifest
from connected_registry.storage import RegistryStore
from connected_registry.sync.parent_client import ParentClient, ParentError

log = logging.getLogger("connected_registry.sync")

_EMPTY_STREAM_CHUNK = b""
BLOB_CONCURRENCY = 3


class _Empty:
    async def readany(self) -> bytes:
        return _EMPTY_STREAM_CHUNK


class Downstream:
    def __init__(self, store: RegistryStore, parent: ParentClient, repositories: list[str]) -> None:
        self.store = store
        self.parent = parent
        self.repositories = repositories
        self.bytes_downloaded = 0

    def in_scope(self, repository: str) -> bool:
        return repository_in_scope(self.repositories, repository)

    # --- content ------------------------------------------------------------------------------------

    async def copy_manifest(self, repository: str, reference: str, tag: str | None = None, origin: str | None = None,
                            seen: set | None = None) -> str | None:
        """Copy a manifest (and what it needs) from the parent; returns its digest, None if the parent lacks it."""
        seen = seen if seen is not None else set()
        fetched = await self.parent.get_manifest(repository, reference)
        if fetched is None:
            return None
        algorithm = parse_digest(reference).algorithm if is_digest(reference) else "sha256"
        digest = digest_of(fetched.body, algorithm)
        if (is_digest(reference) and digest != reference) or (fetched.digest and fetched.digest.startswith(algorithm)
                                                               and fetched.digest != digest):
            raise ParentError("protocol", f"parent sent manifest bytes for {repository}:{reference} that do not "
                                          f"match their digest {fetched.digest or reference}")
        if digest in seen:
            return digest
        seen.add(digest)
        local = self.store.get_manifest(repository, digest)
        if local is None:
            parsed = parse_manifest(fetched.body, fetched.media_type)
            for child in parsed.manifests:
                await self.copy_manifest(repository, child.digest, origin=origin, seen=seen)
            await self._ensure_blobs(repository, [blob.digest for blob in parsed.blobs])
        await self.store.put_manifest(repository, tag or digest, fetched.body, fetched.media_type, origin=origin,
                                      from_parent=True)
        await self.copy_referrers(repository, digest, origin, seen)
        return digest

    async def copy_referrers(self, repository: str, digest: str, origin: str | None, seen: set) -> None:
        """Referrers from the parent's referrers API or, where it has none, its referrers tag schema."""
        referrers = await self.parent.referrers(repository, digest)
        fallback = None
        if referrers is None:
            fallback_tag = digest.replace(":", "-", 1)
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
                await self.copy_manifest(repository, child, origin=origin, seen=seen)
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
        if self.store.blob_size(repository, digest) is not None:
            return
        if await self.store.link_blob(repository, digest):
            return  # present in another repository: never transferred again
        session = await self._download_session(repository, digest)
        try:
            response = await self.parent.open_blob(repository, digest, session.offset)
        except ParentError as error:
            if error.status != 416 or not session.offset:
                raise
            # A Range past the end: every byte arrived before a restart, only the verification was left.
            await self._verify_and_keep(session, repository, digest)
            return
        try:
            if response.status == 200 and session.offset:  # the parent ignored Range: start over
                await self.store.uploads.cancel(session)
                session = await self._download_session(repository, digest, fresh=True)
            received = await self.store.uploads.append(session, response.content, None)
            self.bytes_downloaded += received
            await self._verify_and_keep(session, repository, digest)
        finally:
            response.release()

    async def _verify_and_keep(self, session, repository: str, digest: str) -> None:
        """Verify the downloaded bytes and make them visible; a mismatch discards them (the next try starts over)."""
        try:
            await self.store.uploads.complete(session, _Empty(), digest, self.store.origin)
        except OciError as error:
            raise ParentError("protocol", f"blob {repository}@{digest} from the parent failed verification: "
                                          f"{error.message}") from None
        finally:
            await self.store.control.forget(f"download:{digest}")

    async def _download_session(self, repository: str, digest: str, fresh: bool = False):
        """A persistent upload session per blob, so a cut transfer resumes with Range where it stopped."""
        key = f"download:{digest}"
        upload_id = None if fresh else self.store.control.get(key)
        if upload_id:
            try:
                return self.store.uploads.get(repository, upload_id)
            except OciError:
                pass
        session = await self.store.uploads.create(repository)
        await self.store.control.set(key, session.id)
        return session

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
        elif kind == "ManifestPut":
            await self.copy_manifest(repository, digest, origin=origin)
        elif kind == "TagDeleted" and tag:
            record = self.store.get_manifest(repository, tag)
            if record is not None and record.digest == digest:
                await self.store.delete_manifest(repository, tag, origin=origin, from_parent=True)
        elif kind == "ManifestDeleted":
            if self.store.get_manifest(repository, digest) is not None:
                await self.store.delete_manifest(repository, digest, origin=origin, from_parent=True)

    # --- full reconcile -------------------------------------------------------------------------------

    async def reconcile_repository(self, repository: str) -> None:
        """Make the tags of one repository match the parent's complete listing."""
        tags = await self.parent.list_tags(repository)
        if tags is None:
            return  # unknown at the parent: nothing to copy, and not a signal to delete
        for tag in tags:
            if self.store.undelivered_tag(repository, tag):
                continue
            fetched_digest = await self.copy_manifest(repository, tag, tag=tag)
            if fetched_digest is None:
                log.info("tag %s:%s vanished at the parent during the reconcile", repository, tag)
        present = set(tags)
        for local in self.store.list_tags(repository, None, None):
            if local not in present and not _is_referrers_tag(local) and not self.store.undelivered_tag(repository, local):
                await self.store.delete_manifest(repository, local, from_parent=True)


def first_error(group: BaseExceptionGroup) -> BaseException:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _is_referrers_tag(tag: str) -> bool:
    return tag.startswith(("sha256-", "sha512-"))
