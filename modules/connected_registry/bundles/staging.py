"""The first half of an import: the bundle read once, in order, its signature verified against the trusted key
before anything else is taken, each file it carries streamed into a persistent upload session of the store and
checked against its digest and the signed size as the bytes pass. Nothing is visible yet: a tampered bundle is
refused here, and one that ends early keeps what arrived (the sessions and their digests are remembered, as a
cut transfer from the parent is), so the same import given the whole file goes on from there."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from connected_registry.bundles.document import BUNDLE_FILE, BundleManifest, TrustedKey, verify_trusted
from connected_registry.bundles.layout import manifest_from_layout
from connected_registry.oci.digest import is_digest, parse_digest
from connected_registry.oci.errors import OciError
from connected_registry.storage import RegistryStore
from connected_registry.storage.records import ResumableDownload
from connected_registry.storage.uploads import UploadSession

MAX_DOCUMENT_BYTES = 64 << 20  # the signed manifest and index.json are read whole
STAGING_REPOSITORY = "connected-registry-bundle"  # an unsigned layout's files, before index.json says where they go


@dataclass
class StagedFile:
    path: str
    size: int
    session: UploadSession


@dataclass
class Staged:
    """A bundle whose every file verified, waiting to be applied."""

    manifest: BundleManifest
    files: dict[str, StagedFile] = field(default_factory=dict)  # digest -> its staged bytes
    bytes_staged: int = 0
    already_here: int = 0  # files the store held already

    async def discard(self, store: RegistryStore) -> None:
        """Staged files nothing used (the apply installed the others): removed, with their resume keys."""
        for digest, staged in self.files.items():
            try:
                session = store.uploads.get(staged.session.repository, staged.session.id)
            except OciError:
                session = None  # installed by the apply (or gone)
            if session is not None:
                await store.uploads.cancel(session)
            if store.control.transfer_session(ResumableDownload(digest)) == staged.session.id:
                await store.control.forget_transfer_session(ResumableDownload(digest))


class Stager:
    def __init__(self, store: RegistryStore, trusted: list[TrustedKey], unsigned: bool = False,
                 repository: str | None = None) -> None:
        self.store, self.trusted, self.unsigned, self.repository = store, trusted, unsigned, repository
        self.manifest: BundleManifest | None = None
        self.index: dict | None = None
        self.staged = Staged(BundleManifest({}, None, "", {}, {}))
        self._home: dict[str, str] = {}  # digest -> the repository whose session stages it

    async def stage(self, members: AsyncIterator) -> Staged:
        async for member in members:
            await self._take(member)
        manifest = self.manifest if not self.unsigned else manifest_from_layout(self.index, self.repository,
                                                                                self.staged.files)
        if manifest is None:
            raise OciError("BUNDLE_INVALID", f"the bundle has no signed bundle manifest ({BUNDLE_FILE}): import a "
                           "plain OCI layout (skopeo, oras) with --unsigned")
        missing = [digest for digest in manifest.blobs
                   if digest not in self.staged.files and not self._held(digest)]
        if missing:
            raise OciError("BUNDLE_INCOMPLETE", f"the bundle lacks {len(missing)} file(s) its manifest names "
                           f"({_name(missing[0])}...): nothing was imported; what arrived is kept, give the whole "
                           "bundle again")
        self.staged.manifest = manifest
        return self.staged

    async def _take(self, member) -> None:
        if member.name == BUNDLE_FILE and not self.unsigned:
            if not self.trusted:
                raise OciError("BUNDLE_UNTRUSTED", "no trusted key for this bundle: this instance has not learned its "
                               "parent's key online; give the exporting instance's public key with --trust-key FILE")
            self.manifest = verify_trusted(await _read_whole(member), self.trusted)
            self._home = {digest: repository for repository, listing in sorted(self.manifest.repositories.items(),
                                                                                reverse=True)
                          for digest in [*listing.manifests, *listing.blobs]}
        elif member.name == "index.json":
            self.index = _json(await _read_whole(member), "index.json")
        elif member.name.startswith("blobs/"):
            await self._blob(member)

    async def _blob(self, member) -> None:
        digest = _digest_of_name(member.name)
        if not self.unsigned:
            if self.manifest is None:
                raise OciError("BUNDLE_INVALID", f"no signed bundle manifest ({BUNDLE_FILE}) comes before "
                               f"{member.name}: a plain OCI layout (skopeo, oras) imports with --unsigned; a bundle "
                               "of ours has it first, so export it again")
            expected = self.manifest.blobs.get(digest)
            if expected is None:
                return  # not named by the signed manifest: not taken
            if member.size != expected:
                raise OciError("BUNDLE_TAMPERED", f"{member.name} is {member.size} bytes but the signed bundle "
                               f"manifest says {expected}: nothing was imported")
        if self._held(digest):
            self.staged.already_here += 1
            return
        await self._stage(member, digest, self._home.get(digest) or self.repository or STAGING_REPOSITORY)

    def _held(self, digest: str) -> bool:
        return self.store.holds_blob(digest)

    async def _stage(self, member, digest: str, repository: str) -> None:
        """Into the session kept for this digest (from where an earlier, cut import stopped), verified."""
        session = await self.store.resumable_session(repository, digest)
        if session.offset > member.size:
            await self.store.uploads.cancel(session)
            session = await self.store.resumable_session(repository, digest, fresh=True)
        await member.skip(session.offset)
        before = session.offset
        await self.store.uploads.append(session, member, None)
        self.staged.bytes_staged += session.offset - before
        algorithm, hex_part = parse_digest(digest)
        if algorithm == "sha256" and session.hasher is not None and session.hasher.hexdigest() != hex_part:
            actual = session.hasher.hexdigest()
            await self.store.uploads.cancel(session)
            await self.store.control.forget_transfer_session(ResumableDownload(digest))
            raise OciError("BUNDLE_TAMPERED", f"{member.name} does not match its digest (its bytes have sha256:"
                           f"{actual}): the bundle was changed after export; nothing was imported")
        self.staged.files[digest] = StagedFile(session.path, member.size, session)


async def _read_whole(member) -> bytes:
    if member.size > MAX_DOCUMENT_BYTES:
        raise OciError("BUNDLE_INVALID", f"{member.name} is larger than {MAX_DOCUMENT_BYTES} bytes")
    parts = []
    while chunk := await member.readany():
        parts.append(chunk)
    return b"".join(parts)


def _json(data: bytes, name: str) -> dict:
    try:
        document = json.loads(data)
    except ValueError as error:
        raise OciError("BUNDLE_INVALID", f"{name} is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise OciError("BUNDLE_INVALID", f"{name} is not a JSON object")
    return document


def _digest_of_name(name: str) -> str:
    parts = name.split("/")
    digest = f"{parts[1]}:{parts[2]}" if len(parts) == 3 else ""
    if not is_digest(digest):
        raise OciError("BUNDLE_INVALID", f"{name} is not a blob of an OCI layout (blobs/<algorithm>/<hex>)")
    return digest


def _name(digest: str) -> str:
    return "blobs/" + digest.replace(":", "/", 1)

