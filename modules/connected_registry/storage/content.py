"""What the read routes serve, as one protocol: manifests, blobs, referrers and listings of one registry.

The local store implements it (`LocalContent`); a child's pull-through cache (sync.ondemand.PullThrough) wraps
a `Content` and asks the parent on a miss, as distribution's registry/proxy wraps its stores. The handlers call
one object and never know which. Writes (pushes, deletes, uploads) go to the store itself: nothing pulls them
through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import BinaryIO, Protocol

from connected_registry.storage.blobstore import RemoteBlob, StoredBlob
from connected_registry.storage.manifest_cache import ManifestRecord
from connected_registry.storage.registry import RegistryStore


class ArrivingBlob(Protocol):
    """A blob still arriving from the parent (a fill in progress), readable as its bytes land (sync.fills)."""

    size: int  # the whole blob's, as the parent announced it
    file: BinaryIO  # the growing file, for sendfile at the offsets `windows` yields
    failure: str | None  # set when the bytes cannot be completed: the client's transfer must break

    def windows(self, start: int, end: int) -> AsyncIterator[tuple[int, int]]:
        """(offset, length) of the bytes in [start, end) as they land; ends early with `failure` set."""

    def close(self) -> None:
        """Let go of the transfer (also done when `windows` ends)."""


Blob = StoredBlob | RemoteBlob | ArrivingBlob


class Content(Protocol):
    """The read side of a registry, per repository. None means "not here" (the handler answers it unknown);
    an `OciError` says more (why a parent could not provide it)."""

    async def get_manifest(self, repository: str, reference: str) -> ManifestRecord | None:
        """By tag or digest; GET and HEAD alike (a client's HEAD before its GET is a pull)."""

    def stat_blob(self, repository: str, digest: str) -> StoredBlob | RemoteBlob | None:
        """For a HEAD: only what is here. A HEAD neither counts as a use nor starts a transfer (pushes HEAD
        every layer first)."""

    async def open_blob(self, repository: str, digest: str) -> Blob | None:
        """For a GET: the stored blob, or one still arriving."""

    async def referrers(self, repository: str, subject: str, artifact_type: str | None) -> list[dict]:
        """The descriptors of the manifests whose subject is `subject`, of `artifact_type` when given."""

    def repository_exists(self, repository: str) -> bool: ...

    def list_tags(self, repository: str, limit: int | None, last: str | None) -> list[str]: ...

    def list_repositories(self, limit: int | None, last: str | None) -> list[str]: ...


class LocalContent:
    """`Content` from the store alone: what a root serves, and what a pull-through layer looks in first."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    async def get_manifest(self, repository: str, reference: str) -> ManifestRecord | None:
        return await self.store.read_manifest(repository, reference)

    def stat_blob(self, repository: str, digest: str) -> StoredBlob | RemoteBlob | None:
        size = self.store.blob_size(repository, digest)
        return None if size is None else self.store.stored_blob(digest, size)

    async def open_blob(self, repository: str, digest: str) -> Blob | None:
        return self.stat_blob(repository, digest)

    async def referrers(self, repository: str, subject: str, artifact_type: str | None) -> list[dict]:
        descriptors = []
        for referrer in self.store.referrers(repository, subject, artifact_type):
            descriptor = {"mediaType": referrer.media_type, "digest": referrer.digest, "size": referrer.size}
            if referrer.artifact_type:
                descriptor["artifactType"] = referrer.artifact_type
            if referrer.annotations:
                descriptor["annotations"] = referrer.annotations
            descriptors.append(descriptor)
        return descriptors

    def repository_exists(self, repository: str) -> bool:
        return self.store.repository_exists(repository)

    def list_tags(self, repository: str, limit: int | None, last: str | None) -> list[str]:
        return self.store.list_tags(repository, limit, last)

    def list_repositories(self, limit: int | None, last: str | None) -> list[str]:
        return self.store.list_repositories(limit, last)
