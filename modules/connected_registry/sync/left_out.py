"""What the `platforms` setting kept off the link (issue 16): the manifests of an index that the sync left out, and
their blobs, counted once each for the status document's `sync.platforms`."""

from __future__ import annotations

import logging

from connected_registry.oci.errors import OciError
from connected_registry.oci.manifest import parse_manifest
from connected_registry.storage import RegistryStore
from connected_registry.sync.budget import WalkBudget
from connected_registry.sync.parent_client import ParentClient, ParentError

log = logging.getLogger("connected_registry.sync")


class LeftOutCount:
    """Since the start: the manifests left out and the bytes that did not cross the link because of it."""

    def __init__(self) -> None:
        self.manifests = 0
        self.bytes = 0
        self.counted: set[str] = set()  # manifests and blobs counted once, however many indexes name them

    async def count(self, parent: ParentClient, store: RegistryStore, repository: str, digests: set[str],
                    budget: WalkBudget) -> None:
        """Each manifest's bytes and those of its blobs not here, read from the manifest at the parent: a small
        request, once per manifest; its blobs never cross the link. One whose size cannot be read is not counted."""
        for digest in sorted(digests - self.counted):
            self.counted.add(digest)
            budget.spend()
            try:
                fetched = await parent.get_manifest(repository, digest)
                parsed = parse_manifest(fetched.body, fetched.media_type) if fetched else None
            except (ParentError, OciError) as error:
                log.info("%s@%s is left out (platforms); its size is unknown: %s", repository, digest, error)
                continue
            if parsed is None:
                continue
            blobs = {blob.digest: blob.size for blob in parsed.blobs
                     if blob.digest not in self.counted and not store.holds_blob(blob.digest)}
            self.counted.update(blobs)
            self.manifests += 1
            self.bytes += len(fetched.body) + sum(blobs.values())

    def document(self, platforms: list[str] | None) -> dict:
        return {"synced": platforms, "manifestsLeftOut": self.manifests, "bytesSaved": self.bytes}
