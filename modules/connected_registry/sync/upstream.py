"""Child to parent (SPEC 7.3, ReadWrite): the outbox drained in commit order per repository, one entry
at a time: missing blobs (HEAD, then a mount, then an upload), child manifests, the manifest, its tag.
Delivery is at least once and idempotent; an entry the parent refuses for good is parked."""

from __future__ import annotations

import json
import logging

from connected_registry.oci.manifest import OCI_INDEX, parse_manifest
from connected_registry.status import StatusBoard
from connected_registry.storage import RegistryStore
from connected_registry.sync.parent_client import ParentClient, ParentError

log = logging.getLogger("connected_registry.upstream")


class Upstream:
    def __init__(self, store: RegistryStore, parent: ParentClient, status: StatusBoard) -> None:
        self.store, self.parent, self.status = store, parent, status
        self.bytes_uploaded = 0
        self.plain_parent = False  # no referrers API there: keep its referrers tag schema up to date

    async def drain(self) -> int:
        """Deliver every deliverable entry; returns how many were acknowledged. Transient failures raise."""
        delivered = 0
        blocked: set[str] = set()
        for entry in self.store.outbox():
            repository = entry["repository"]
            if repository in blocked:
                continue
            if entry["state"] == "parked":
                blocked.add(repository)  # later entries of this repository wait behind it
                continue
            try:
                await self.deliver(entry)
            except ParentError as error:
                if error.kind != "refused":
                    raise
                reference = entry["tag"] or entry["digest"]
                message = (f"the parent refused {entry['operation']} of {repository}:{reference}: {error}. "
                           f"Later uploads of {repository} wait: `connected-registry outbox retry {entry['id']}` "
                           f"or `outbox drop {entry['id']}`")
                await self.store.park_outbox_entry(entry["id"], str(error))
                self.status.set("Sync", "Error", "UPLOAD_REJECTED", message)
                blocked.add(repository)
                continue
            await self.store.finish_outbox_entry(entry["id"])
            delivered += 1
        if not any(entry["state"] == "parked" for entry in self.store.outbox()):
            self.status.clear("UPLOAD_REJECTED")
        return delivered

    async def deliver(self, entry: dict) -> None:
        repository, operation = entry["repository"], entry["operation"]
        if operation == "DeleteTag":
            await self.parent.delete_manifest(repository, entry["tag"])
        elif operation == "DeleteManifest":
            await self.parent.delete_manifest(repository, entry["digest"])
        else:
            if not await self.push_manifest(repository, entry["digest"]):
                return  # deleted locally since: a later entry says so
            if entry["tag"]:
                record = self.store.get_manifest(repository, entry["digest"])
                await self.parent.put_manifest(repository, entry["tag"], record.body, record.media_type)

    async def push_manifest(self, repository: str, digest: str) -> bool:
        record = self.store.get_manifest(repository, digest)
        if record is None:
            return False
        parsed = parse_manifest(record.body, record.media_type)
        for child in parsed.manifests:
            await self.push_manifest(repository, child.digest)
        for blob in parsed.blobs:
            await self.push_blob(repository, blob.digest)
        await self.parent.put_manifest(repository, digest, record.body, record.media_type)
        if parsed.subject and self.plain_parent:
            await self._add_to_referrers_tag(repository, parsed.subject, digest, record, parsed.artifact_type,
                                             parsed.annotations)
        return True

    async def _add_to_referrers_tag(self, repository: str, subject: str, digest: str, record, artifact_type,
                                    annotations) -> None:
        """The OCI referrers tag schema: `<alg>-<hex>` of the subject names an index of its referrers."""
        tag = subject.replace(":", "-", 1)
        current = await self.parent.get_manifest(repository, tag)
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        if current is not None:
            try:
                loaded = json.loads(current.body)
                if isinstance(loaded, dict) and isinstance(loaded.get("manifests"), list):
                    index = loaded
            except ValueError:
                pass
        if any(isinstance(m, dict) and m.get("digest") == digest for m in index["manifests"]):
            return
        descriptor = {"mediaType": record.media_type, "digest": digest, "size": record.size}
        if artifact_type:
            descriptor["artifactType"] = artifact_type
        if annotations:
            descriptor["annotations"] = annotations
        index["manifests"].append(descriptor)
        await self.parent.put_manifest(repository, tag, json.dumps(index).encode(), OCI_INDEX)

    async def push_blob(self, repository: str, digest: str) -> None:
        """Only a blob held here in `repository` goes up (found there, mounted from another repository, uploaded):
        the parent, which trusts the sync token, never takes into `repository` what was not in it here."""
        size = self.store.blob_size(repository, digest)
        if size is None:
            raise ParentError("refused", f"blob {digest} is not in {repository} here (deleted since the manifest "
                                         "was pushed?): push the blob again")
        if await self.parent.has_blob(repository, digest):
            return
        sources = [source for source in self.store.repositories_with_blob(digest) if source != repository]
        for source in sources[:3]:
            if await self.parent.mount_blob(repository, source, digest):
                return
        await self._upload(repository, digest, size)

    async def _upload(self, repository: str, digest: str, size: int) -> None:
        """One upload session per blob, remembered here until the parent has the blob: a transfer the link cut
        goes on from the bytes the parent holds (it says how many), not from the start."""
        key = f"upload:{self.parent.endpoint}/{repository}@{digest}"  # a new parent: a new session
        location = self.store.control.get(key)
        offset = await self.parent.upload_offset(repository, location) if location else None
        while True:
            if offset is None:
                if location:
                    await self.parent.cancel_upload(repository, location)
                location, offset = await self.parent.start_upload(repository), 0
                await self.store.control.set(key, location)
            elif offset:
                log.info("resuming the upload of %s@%s at %d of %d bytes", repository, digest, offset, size)
            try:
                await self.parent.finish_upload(repository, digest, location, self.store.blob_path(digest), offset,
                                                size)
            except ParentError as error:
                if error.kind != "refused":
                    raise  # the link: the session stays, and the next attempt resumes it
                if offset:
                    log.info("the parent did not take the upload of %s@%s resumed at %d bytes (%s): starting over",
                             repository, digest, offset, error)
                    offset = None
                    continue
                await self.parent.cancel_upload(repository, location)
                await self.store.control.forget(key)
                raise
            break
        await self.store.control.forget(key)
        self.bytes_uploaded += size - offset
