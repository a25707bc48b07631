"""The second half of an import: a verified bundle applied exactly as a sync from its exporter would apply it. The
sync's own downstream reconciles each repository of the bundle in this instance's scope against the bundle's
complete tag listing (`BundleSource` stands for the parent): the same events, scope, ReadOnly rules, `platforms`,
undelivered local tags kept, an image's content before its tag, the cache's content made permanent. A bundle
older than what this instance already holds from its exporter (a replay) changes nothing and says so."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from connected_registry.bundles.document import BundleManifest, Inventory, fingerprint, load_public_key
from connected_registry.bundles.export import repositories_matching
from connected_registry.bundles.source import BundleSource
from connected_registry.bundles.staging import Staged
from connected_registry.bundles.upstream import apply_outbox, mark_delivered
from connected_registry.oci.manifest import parse_manifest
from connected_registry.oci.platforms import Platform, parse_platform
from connected_registry.storage import RegistryStore
from connected_registry.sync.downstream import Downstream
from connected_registry.timefmt import utc_timestamp

log = logging.getLogger("connected_registry.bundles")

OnImage = Callable[[str, str, str], Awaitable[None]]  # repository, tag, digest: applied


def replayed(store: RegistryStore, manifest: BundleManifest) -> str | None:
    """Why the bundle is older than what is here from its exporter, or None."""
    if not manifest.signed or manifest.cursor is None:
        return None
    state = store.control.state()
    exporter = str(manifest.exporter.get("instanceId"))
    kept = state.bundle_cursors.get(exporter)
    if kept is not None and manifest.cursor < kept:
        return (f"this bundle of {manifest.exporter.get('name')} (cursor {manifest.cursor}, {manifest.time}) is older "
                f"than one imported before (cursor {kept}): a replay, nothing was changed")
    from_parent = state.parent_key and fingerprint(load_public_key(state.parent_key, "the parent key")) \
        == manifest.exporter.get("keyFingerprint")
    if from_parent and state.sync_cursor is not None and manifest.cursor < state.sync_cursor:
        return (f"this bundle of {manifest.exporter.get('name')} (cursor {manifest.cursor}) is older than what this "
                f"instance synced from it over the network (cursor {state.sync_cursor}): nothing was changed")
    return None


async def apply_bundle(store: RegistryStore, staged: Staged, scope: list[str], platforms: list[Platform] | None,
                       on_image: OnImage, clock, mode: str = "ReadWrite") -> dict:
    manifest = staged.manifest
    reason = replayed(store, manifest)
    summary = {"time": utc_timestamp(clock()), "from": manifest.exporter.get("name"),
               "instanceId": manifest.exporter.get("instanceId"), "cursor": manifest.cursor,
               "exported": manifest.time or None, "signed": manifest.signed, "bytes": staged.bytes_staged,
               "images": 0, "repositories": 0, "outOfScope": [], "failures": [], "replay": reason is not None}
    if reason is not None:
        log.warning("%s", reason)
        summary["message"] = reason
    elif manifest.direction == "outbox":
        await apply_outbox(store, staged, on_image, summary, scope, mode)
    else:
        summary["delivered"] = await mark_delivered(store, staged)
        await _reconcile(store, staged, scope, platforms, on_image, summary)
    await staged.discard(store)
    await _remember(store, manifest, summary)
    return summary


async def _reconcile(store: RegistryStore, staged: Staged, scope: list[str], platforms: list[Platform] | None,
                     on_image: OnImage, summary: dict) -> None:
    if platforms is None and staged.manifest.platforms:  # the bundle's choice, where this instance has none
        platforms = [parse_platform(text) for text in staged.manifest.platforms]
    downstream = Downstream(store, BundleSource(store, staged), lambda: scope, lambda: platforms)
    for repository, listing in sorted(staged.manifest.repositories.items()):
        if not downstream.in_scope(repository):
            summary["outOfScope"].append(repository)
            continue
        failures = await downstream.reconcile_repository(repository)
        summary["failures"] += failures
        summary["repositories"] += 1
        for tag, digest in sorted(listing.tags.items()):
            if not any(failure.startswith(f"{repository}:{tag}:") for failure in failures):
                summary["images"] += 1
                await on_image(repository, tag, digest)
    if summary["outOfScope"]:
        log.info("not in this instance's scope, not imported: %s", ", ".join(summary["outOfScope"]))


async def _remember(store: RegistryStore, manifest: BundleManifest, summary: dict) -> None:
    changes: dict = {"last_bundle_import": summary}
    if manifest.signed and manifest.cursor is not None and not summary["replay"] and not summary["failures"]:
        exporter = str(manifest.exporter.get("instanceId"))
        cursors = dict(store.control.state().bundle_cursors)
        cursors[exporter] = max(manifest.cursor, cursors.get(exporter, manifest.cursor))
        changes["bundle_cursors"] = cursors
    await store.control.update_state(**changes)


def take_inventory(store: RegistryStore, patterns: list[str], instance: dict) -> Inventory:
    """What is here in scope, whole: manifests per repository and the blobs they name."""
    manifests: dict[str, set[str]] = {}
    blobs: set[str] = set()
    for repository in repositories_matching(store, patterns):
        whole = {digest for digest in store.manifest_digests(repository) if not store.incomplete(repository, digest)}
        manifests[repository] = whole
        for digest in whole:
            record = store.get_manifest(repository, digest)
            if record is not None:
                blobs |= {blob.digest for blob in parse_manifest(record.body, record.media_type).blobs}
                blobs.add(digest)
    return Inventory(instance, manifests, blobs, dict(store.control.state().bundle_cursors))
