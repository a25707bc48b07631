"""A ReadWrite child's outbox carried up by bundle (issue 17): at the parent each entry is applied in order as the
child's push or delete over the network would be (a put here, with its events, and on a ReadWrite parent its own
outbox entry upward); at the child, an entry is delivered once a bundle from the parent shows its content there."""

from __future__ import annotations

from connected_registry.auth.permissions import repository_in_scope
from connected_registry.bundles.document import BundleManifest, RepositoryListing
from connected_registry.bundles.source import BundleSource
from connected_registry.bundles.staging import Staged
from connected_registry.oci.errors import OciError
from connected_registry.oci.manifest import parse_manifest
from connected_registry.storage import RegistryStore


class _Empty:
    async def readany(self) -> bytes:
        return b""


async def apply_outbox(store: RegistryStore, staged: Staged, on_image, summary: dict, scope: list[str],
                       mode: str) -> None:
    """As the child's pushes over the network: a ReadOnly instance takes none, a ReadWrite child only in its scope."""
    if mode == "ReadOnly":
        raise OciError("DENIED", "this instance is ReadOnly: it takes no pushes, so no outbox bundle either; import "
                       "it at the parent of the child that exported it")
    outside = sorted({op["repository"] for op in staged.manifest.operations
                      if not repository_in_scope(scope, op["repository"])})
    if outside:
        raise OciError("DENIED", f"repositories {', '.join(outside[:5])} are not synchronized by this registry: "
                       "nothing of the outbox bundle was applied")
    source, origin = BundleSource(store, staged), staged.manifest.exporter.get("name") or store.origin
    for operation in staged.manifest.operations:
        repository, tag, digest = operation["repository"], operation.get("tag"), operation["digest"]
        if operation["operation"] == "PushManifest":
            fetched = await _put(store, staged, source, repository, digest, origin)
            if tag:
                await store.put_manifest(repository, tag, fetched.body, fetched.media_type, origin=origin)
                summary["images"] += 1
                await on_image(repository, tag, digest)
        else:
            try:
                await store.delete_manifest(repository, tag if operation["operation"] == "DeleteTag" else digest,
                                            origin=origin)
            except OciError as error:
                if error.key != "MANIFEST_UNKNOWN":  # gone already: as the network's delete, idempotent
                    raise
    summary["repositories"] = len(staged.manifest.repositories)


async def _put(store: RegistryStore, staged: Staged, source: BundleSource, repository: str, digest: str,
               origin: str):
    """The manifest by digest after what it names (its children, its blobs), as the child's push sends them."""
    fetched = await source.get_manifest(repository, digest)
    if fetched is None:
        raise OciError("BUNDLE_INCOMPLETE", f"the outbox bundle lacks manifest {repository}@{digest}")
    parsed = parse_manifest(fetched.body, fetched.media_type or None)
    for child in dict.fromkeys(entry.digest for entry in parsed.manifests):
        if store.get_manifest(repository, child) is None:
            await _put(store, staged, source, repository, child, origin)
    for blob in dict.fromkeys(entry.digest for entry in parsed.blobs):
        if store.blob_size(repository, blob) is None and not await store.link_blob(repository, blob):
            file = staged.files.get(blob)
            if file is None:
                raise OciError("BUNDLE_INCOMPLETE", f"the outbox bundle lacks blob {blob} of {repository}")
            await store.uploads.complete(file.session, _Empty(), blob, origin)
            await store.link_blob(repository, blob)
    await store.put_manifest(repository, digest, fetched.body, fetched.media_type, origin=origin)
    return fetched


async def mark_delivered(store: RegistryStore, staged: Staged) -> int:
    """Outbox entries whose content a bundle from the parent shows there (its complete tag listings): delivered."""
    delivered = 0
    for entry in store.outbox():
        listing = staged.manifest.repositories.get(entry["repository"])
        if listing is None or staged.manifest.direction != "downstream":
            continue
        tag, digest = entry["tag"], entry["digest"]
        there = {"PushManifest": (listing.tags.get(tag) == digest) if tag else digest in _named(listing),
                 "DeleteTag": tag not in listing.tags,
                 "DeleteManifest": digest not in listing.tags.values()}[entry["operation"]]
        if there:
            await store.finish_outbox_entry(entry["id"])
            delivered += 1
    return delivered


def _named(listing) -> set[str]:
    return set(listing.tags.values()) | set(listing.manifests)


def receipt_of(outbox: BundleManifest, parent: dict, cursor: int, time: str) -> BundleManifest:
    """What the parent signs after applying an outbox bundle: the entries it applied and the tags they set, for
    the child's `import --receipt`."""
    repositories = {name: RepositoryListing(tags=dict(listing.tags)) for name, listing in outbox.repositories.items()}
    return BundleManifest(parent, cursor, time, repositories, {}, "receipt", list(outbox.operations))


async def apply_receipt(store: RegistryStore, receipt: BundleManifest) -> int:
    """The child's side: the entries the parent's receipt names, delivered."""
    applied = {(op.get("id"), op["operation"], op["repository"], op.get("tag"), op["digest"])
               for op in receipt.operations}
    delivered = 0
    for entry in store.outbox():
        if (entry["id"], entry["operation"], entry["repository"], entry["tag"], entry["digest"]) in applied:
            await store.finish_outbox_entry(entry["id"])
            delivered += 1
    await store.control.update_state(last_bundle_import={
        "time": receipt.time, "from": receipt.exporter.get("name"), "receipt": True, "delivered": delivered})
    return delivered
