"""A verified bundle seen as the sync sees its parent (the calls `sync.downstream.Downstream` makes of a
`ParentClient`): the tag listings its signed manifest vouches for, manifests and blobs by digest from what it
carries, or from the store when the bundle was made for a receiver that holds them (`export --have`)."""

from __future__ import annotations

import asyncio
import json

from connected_registry.bundles.staging import Staged
from connected_registry.oci.digest import is_digest
from connected_registry.oci.manifest import MAX_MANIFEST_BYTES, parse_manifest
from connected_registry.storage import RegistryStore
from connected_registry.sync.bandwidth import LinkBudget
from connected_registry.sync.parent_client import ParentManifest, ParentRefused

RANGE_PAST_THE_END = 416


class BundleSource:
    def __init__(self, store: RegistryStore, staged: Staged) -> None:
        self.store, self.staged, self.manifest = store, staged, staged.manifest
        self.endpoint = f"the bundle of {self.manifest.exporter.get('name', 'an unknown instance')}"
        self.budget = LinkBudget()  # nothing crosses a link: unlimited
        self._subjects: dict[str, str | None] = {}  # manifest digest -> its subject

    async def list_tags(self, repository: str) -> list[str] | None:
        listing = self.manifest.repositories.get(repository)
        return sorted(listing.tags) if listing is not None else None

    async def catalog(self) -> list[str]:
        return sorted(self.manifest.repositories)

    async def get_manifest(self, repository: str, reference: str) -> ParentManifest | None:
        listing = self.manifest.repositories.get(repository)
        digest = reference if is_digest(reference) else (listing.tags.get(reference) if listing else None)
        body = self._bytes(digest, repository) if digest else None
        if body is None:
            return None
        media_type = (listing.manifests.get(digest) if listing else None) or _declared_media_type(body)
        return ParentManifest(body, media_type, digest)

    async def referrers(self, repository: str, digest: str) -> list[dict]:
        """The manifests the bundle carries for `repository` whose subject is `digest`."""
        listing = self.manifest.repositories.get(repository)
        found = []
        for candidate, media_type in (listing.manifests.items() if listing else ()):
            if self._subject(repository, candidate, media_type) == digest:
                found.append({"digest": candidate, "mediaType": media_type, "size": self.manifest.blobs[candidate]})
        return found

    async def open_blob(self, repository: str, digest: str, offset: int = 0):
        staged = self.staged.files.get(digest)
        if staged is None:
            raise ParentRefused(f"the bundle does not carry blob {digest} of {repository} and it is not here: make "
                                "the bundle with an inventory of this registry taken now (export --have)", status=404)
        if offset and offset >= staged.size:
            raise ParentRefused(f"{digest} is whole already", status=RANGE_PAST_THE_END)
        return _StagedResponse(staged.path, offset, staged.size)

    def _bytes(self, digest: str, repository: str) -> bytes | None:
        """A manifest's bytes: carried by the bundle, or held here for a delta (the bundle was made for what this
        instance holds: `export --have`)."""
        staged = self.staged.files.get(digest)
        if staged is not None:
            with open(staged.path, "rb") as file:
                return file.read(MAX_MANIFEST_BYTES + 1)
        record = self.store.get_manifest(repository, digest)
        return record.body if record is not None else None

    def _subject(self, repository: str, digest: str, media_type: str) -> str | None:
        if digest not in self._subjects:
            body = self._bytes(digest, repository)
            self._subjects[digest] = parse_manifest(body, media_type or None).subject if body else None
        return self._subjects[digest]


def _declared_media_type(body: bytes) -> str:
    try:
        declared = json.loads(body).get("mediaType")
    except (ValueError, AttributeError):
        return ""
    return declared if isinstance(declared, str) else ""


class _StagedContent:
    def __init__(self, path: str, offset: int, size: int) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by release()
        self._file.seek(offset)
        self._left = size - offset

    async def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        chunk = await asyncio.get_running_loop().run_in_executor(None, self._file.read, size) if size else b""
        self._left -= len(chunk)
        return chunk

    async def readany(self) -> bytes:
        return await self.read(1 << 20)

    def close(self) -> None:
        self._file.close()


class _StagedResponse:
    """A staged file from `offset`, answered as the parent answers a blob request (200, or 206 with a Range)."""

    def __init__(self, path: str, offset: int, size: int) -> None:
        self.status = 206 if offset else 200
        self.headers = {"Content-Range": f"bytes {offset}-{size - 1}/{size}"} if offset else {}
        self.content_length = size - offset
        self.content = _StagedContent(path, offset, size)

    def release(self) -> None:
        self.content.close()

    close = release
