"""Reading an OCI image layout as members in order, whether a directory or a tar (a file, or a request body), and
what a plain layout (skopeo's, oras') holds when it has no signed bundle manifest (`import --unsigned`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable

from connected_registry.bundles.document import BUNDLE_FILE, BundleManifest, RepositoryListing
from connected_registry.bundles.tar import CHUNK, Read, members
from connected_registry.oci.errors import OciError
from connected_registry.oci.names import validate_name, validate_tag

REF_NAME = "org.opencontainers.image.ref.name"


class FileMember:
    """A file of a layout directory, read as a tar member is."""

    def __init__(self, root: str, name: str) -> None:
        self.name, self.path = name, os.path.join(root, name)
        self.size = os.path.getsize(self.path)
        self.remaining = self.size
        self._file = None

    async def readany(self) -> bytes:
        if not self.remaining:
            return b""
        if self._file is None:
            self._file = open(self.path, "rb")  # noqa: SIM115 - closed when read to the end
            self._file.seek(self.size - self.remaining)
        chunk = await asyncio.get_running_loop().run_in_executor(None, self._file.read, min(CHUNK, self.remaining))
        if not chunk:
            raise OciError("BUNDLE_INCOMPLETE", f"{self.name} ended early")
        self.remaining -= len(chunk)
        if not self.remaining:
            self._file.close()
        return chunk

    async def skip(self, size: int | None = None) -> None:
        self.remaining -= self.remaining if size is None else min(size, self.remaining)


async def directory_members(root: str) -> AsyncIterator[FileMember]:
    """The signed manifest first, then index.json, then every blob."""
    if not os.path.isfile(os.path.join(root, "oci-layout")):
        raise OciError("BUNDLE_INVALID", f"{root} is not an OCI image layout (it has no oci-layout file)")
    for name in (BUNDLE_FILE, "index.json"):
        if os.path.isfile(os.path.join(root, name)):
            yield FileMember(root, name)
    blobs = os.path.join(root, "blobs")
    for algorithm in sorted(os.listdir(blobs)) if os.path.isdir(blobs) else []:
        for hex_part in sorted(os.listdir(os.path.join(blobs, algorithm))):
            if not hex_part.endswith(".partial"):
                yield FileMember(root, f"blobs/{algorithm}/{hex_part}")


def file_reader(path: str, on_bytes: Callable[[int], None] = lambda count: None) -> tuple[Read, Callable[[], None]]:
    """An async read of a file (a tar bundle), and its close."""
    file = open(path, "rb")  # noqa: SIM115 - the caller closes it

    async def read(size: int) -> bytes:
        chunk = await asyncio.get_running_loop().run_in_executor(None, file.read, size)
        on_bytes(len(chunk))
        return chunk

    return read, file.close


def bundle_members(path: str, on_bytes: Callable[[int], None] = lambda count: None):
    """(members, close) of a bundle at `path`: a layout directory or a tar file."""
    if os.path.isdir(path):
        return directory_members(path), lambda: None
    read, close = file_reader(path, on_bytes)
    return members(read), close


def manifest_from_layout(index: dict | None, repository: str | None, staged: dict) -> BundleManifest:
    """What a plain layout holds: each manifest index.json names (`org.opencontainers.image.ref.name`: a tag, or
    `repository:tag`), put in `repository` when given."""
    if index is None:
        raise OciError("BUNDLE_INVALID", "the layout has no index.json: it is not an OCI image layout")
    repositories: dict[str, RepositoryListing] = {}
    for entry in index.get("manifests") or []:
        name = (entry.get("annotations") or {}).get(REF_NAME) if isinstance(entry, dict) else None
        if not isinstance(name, str) or not isinstance(entry.get("digest"), str):
            continue
        target, tag = _repository_and_tag(name, repository)
        listing = repositories.setdefault(target, RepositoryListing())
        listing.tags[tag] = entry["digest"]
        listing.manifests[entry["digest"]] = str(entry.get("mediaType") or "")
    if not repositories:
        raise OciError("BUNDLE_INVALID", "index.json names no tagged image (org.opencontainers.image.ref.name)")
    return BundleManifest({"name": "unsigned OCI layout"}, None, "", repositories,
                          {digest: file.size for digest, file in staged.items()}, signed=False)


def _repository_and_tag(name: str, repository: str | None) -> tuple[str, str]:
    prefix, colon, tag = name.rpartition(":")
    if not colon or "/" in tag:
        prefix, tag = "", name
    target = repository or prefix
    if not target:
        raise OciError("REQUEST_INVALID", f"the layout names {name!r}, a tag without a repository: give "
                       "--repository NAME to say where its images go")
    return validate_name(target), validate_tag(tag, "BUNDLE_INVALID")
