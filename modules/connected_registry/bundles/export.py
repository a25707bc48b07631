"""`export`: what a bundle carries, read from the store (tags, their manifests at every depth, referrers, blobs),
less what the receiver's inventory says it holds, written as an OCI image layout (a directory, or a tar streamed
to a file or a response) after its signed bundle manifest."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from connected_registry.auth.permissions import repository_in_scope
from connected_registry.bundles.document import (BUNDLE_FILE, BundleManifest, Inventory, RepositoryListing,
                                                 fingerprint, sign)
from connected_registry.bundles.tar import END_OF_ARCHIVE, member_header, padding
from connected_registry.oci.digest import parse_digest
from connected_registry.oci.manifest import parse_manifest
from connected_registry.oci.platforms import left_out, parse_platform
from connected_registry.storage import RegistryStore
from connected_registry.storage.blobstore import StoredBlob
from connected_registry.timefmt import utc_timestamp

log = logging.getLogger("connected_registry.bundles")

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
REF_NAME = "org.opencontainers.image.ref.name"


class Output(Protocol):
    async def add_bytes(self, name: str, data: bytes) -> None: ...
    async def add_blob(self, name: str, store: RegistryStore, digest: str, size: int) -> None: ...
    async def finish(self) -> None: ...


@dataclass
class ExportRequest:
    patterns: list[str]  # repositories: names and prefix/* patterns
    have: Inventory | None = None  # the receiver's inventory: leave out what it holds
    outbox: bool = False  # a ReadWrite child's outbox, going up, instead of its content
    platforms: list[str] | None = None  # an index's images of these platforms only (as the `platforms` setting)


@dataclass
class _Plan:
    repositories: dict[str, RepositoryListing] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)  # every file carried -> size
    media_types: dict[str, str] = field(default_factory=dict)  # tagged manifests -> media type (index.json)
    skipped: list[str] = field(default_factory=list)
    operations: list[dict] = field(default_factory=list)  # outbox entries, in order


class _Walk:
    """Each image of a repository whole (children, blobs, referrers), or not at all."""

    def __init__(self, store: RegistryStore, have: Inventory | None, plan: _Plan,
                 platforms: list[str] | None = None) -> None:
        self.store, self.plan = store, plan
        self.platforms = [parse_platform(text) for text in platforms] if platforms else None
        self.have_blobs = have.blobs if have else set()
        self.have_manifests = have.manifests if have else {}

    def repository(self, repository: str) -> None:
        listing = RepositoryListing()
        held = self.have_manifests.get(repository, set())
        for tag in self.store.list_tags(repository, None, None):
            record = self.store.get_manifest(repository, tag)
            if record is None:
                continue
            if record.digest in held or self.image(repository, record.digest, listing, held, set()):
                listing.tags[tag] = record.digest
                self.plan.media_types[record.digest] = record.media_type
            else:
                self.plan.skipped.append(f"{repository}:{tag}")
        self.plan.repositories[repository] = listing  # empty too: a complete listing, so its tags go there too

    def image(self, repository: str, digest: str, listing: RepositoryListing, held: set[str], seen: set[str]) -> bool:
        if digest in seen:
            return True
        seen.add(digest)
        record = self.store.get_manifest(repository, digest)
        if record is None or self.store.incomplete(repository, digest):
            return False  # not whole here (a cache's manifest whose blobs are elsewhere)
        parsed = parse_manifest(record.body, record.media_type)
        leaving = left_out(parsed.manifests, self.platforms)  # export --platform, as the `platforms` setting does
        for child in dict.fromkeys(entry.digest for entry in parsed.manifests if entry.digest not in leaving):
            if self.store.get_manifest(repository, child) is None and self.store.left_out_by(repository, child):
                continue  # left out here by design (platforms): the receiver decides for itself
            if not self.image(repository, child, listing, held, seen):
                return False
        for blob in dict.fromkeys(entry.digest for entry in parsed.blobs):
            size = self.store.blob_size(repository, blob)
            if size is None:
                return False
            if blob not in self.have_blobs:
                self._carry(listing.blobs, blob, size)
        if digest not in held:
            listing.manifests[digest] = record.media_type
            self.plan.sizes[digest] = record.size
        for referrer in self.store.referrers(repository, digest, None):
            self.image(repository, referrer.digest, listing, held, seen)
        return True

    def _carry(self, blobs: list[str], digest: str, size: int) -> None:
        if digest not in blobs:
            blobs.append(digest)
        self.plan.sizes[digest] = size


def plan_outbox(store: RegistryStore, request: ExportRequest) -> _Plan:
    """The outbox's entries in order, with what each push needs (what the parent holds left out)."""
    plan = _Plan()
    walk = _Walk(store, request.have, plan)
    for entry in store.outbox():
        repository, digest, tag = entry["repository"], entry["digest"], entry["tag"]
        listing = plan.repositories.setdefault(repository, RepositoryListing())
        held = walk.have_manifests.get(repository, set())
        if entry["operation"] == "PushManifest" and digest not in held \
                and not walk.image(repository, digest, listing, held, set()):
            plan.skipped.append(f"{repository}@{digest}")
            continue
        if entry["operation"] == "PushManifest" and tag:
            listing.tags[tag] = digest
            plan.media_types[digest] = store.get_manifest(repository, digest).media_type
        plan.operations.append({key: entry[key] for key in ("id", "operation", "repository", "tag", "digest")})
    return plan


def repositories_matching(store: RegistryStore, patterns: list[str]) -> list[str]:
    return [name for name in store.list_repositories(None, None) if repository_in_scope(patterns, name)]


def plan_bundle(store: RegistryStore, request: ExportRequest) -> _Plan:
    plan = _Plan()
    walk = _Walk(store, request.have, plan, request.platforms)
    for repository in repositories_matching(store, request.patterns):
        walk.repository(repository)
    for skipped in plan.skipped:
        log.warning("%s is not whole here (content fetched on demand): it is left out of the bundle", skipped)
    return plan


async def export_bundle(store: RegistryStore, key: ec.EllipticCurvePrivateKey, exporter: dict,
                        request: ExportRequest, output: Output, clock) -> dict:
    """Write the bundle; returns its summary (kept as the last export in the status document)."""
    plan = plan_outbox(store, request) if request.outbox else plan_bundle(store, request)
    manifest = BundleManifest({**exporter, "keyFingerprint": fingerprint(key)}, store.control.event_bounds()[1],
                              utc_timestamp(clock()), plan.repositories, plan.sizes,
                              "outbox" if request.outbox else "downstream", plan.operations, request.platforms)
    await output.add_bytes(BUNDLE_FILE, sign(manifest, key))
    await output.add_bytes("oci-layout", OCI_LAYOUT)
    await output.add_bytes("index.json", _index(manifest, plan))
    manifests = [digest for listing in plan.repositories.values() for digest in listing.manifests]
    for digest in dict.fromkeys([*manifests, *plan.sizes]):
        await output.add_blob(_blob_name(digest), store, digest, plan.sizes[digest])
    await output.finish()
    summary = {"time": manifest.time, "repositories": len(plan.repositories),
               "images": sum(len(listing.tags) for listing in plan.repositories.values()),
               "bytes": sum(plan.sizes.values()), "cursor": manifest.cursor,
               "for": (request.have.instance.get("name") if request.have else None), "leftOut": plan.skipped,
               "direction": manifest.direction, "operations": len(plan.operations)}
    await store.control.update_state(last_bundle_export=summary)
    return summary


def _blob_name(digest: str) -> str:
    algorithm, hex_part = parse_digest(digest)
    return f"blobs/{algorithm}/{hex_part}"


def _index(manifest: BundleManifest, plan: _Plan) -> bytes:
    """index.json names the tagged manifests the bundle carries as `repository:tag`, so `skopeo copy
    oci:BUNDLE:repository:tag` reads them."""
    entries = [{"mediaType": plan.media_types[digest], "digest": digest, "size": manifest.blobs[digest],
                "annotations": {REF_NAME: f"{repository}:{tag}"}}
               for repository, listing in manifest.repositories.items() for tag, digest in listing.tags.items()
               if digest in manifest.blobs]
    return json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": entries}, indent=1).encode()


class TarOutput:
    """A tar streamed through `write` (a file, a response), a blob's bytes as the store gives them, a chunk at a time."""

    def __init__(self, write) -> None:
        self.write = write

    async def add_bytes(self, name: str, data: bytes) -> None:
        await self.write(member_header(name, len(data)) + data + padding(len(data)))

    async def add_blob(self, name: str, store: RegistryStore, digest: str, size: int) -> None:
        await self.write(member_header(name, size))
        async with aclosing(store.blob_chunks(digest, 0, size)) as chunks:
            async for chunk in chunks:
                await self.write(chunk)
        await self.write(padding(size))

    async def finish(self) -> None:
        await self.write(END_OF_ARCHIVE)


class DirectoryOutput:
    """An OCI image layout directory; a blob file already there (an earlier bundle in the same folder) stays."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.join(path, "blobs"), exist_ok=True)

    async def add_bytes(self, name: str, data: bytes) -> None:
        target = os.path.join(self.path, name)
        with open(target + ".partial", "wb") as file:
            file.write(data)
        os.replace(target + ".partial", target)

    async def add_blob(self, name: str, store: RegistryStore, digest: str, size: int) -> None:
        target = os.path.join(self.path, name)
        if os.path.exists(target) and os.path.getsize(target) == size:
            return
        os.makedirs(os.path.dirname(target), exist_ok=True)
        stored = store.stored_blob(digest, size)
        loop = asyncio.get_running_loop()
        if isinstance(stored, StoredBlob):  # a file here: the kernel copies it
            await loop.run_in_executor(None, shutil.copyfile, stored.path, target + ".partial")
        else:
            with open(target + ".partial", "wb") as file:
                async with aclosing(store.blob_chunks(digest, 0, size)) as chunks:
                    async for chunk in chunks:
                        await loop.run_in_executor(None, file.write, chunk)
        os.replace(target + ".partial", target)

    async def finish(self) -> None:
        return None
