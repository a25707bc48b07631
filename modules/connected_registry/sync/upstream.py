"""Child to parent (SPEC 7.3, ReadWrite): the outbox drained in commit order per repository, one entry
at a time per repository and a few repositories side by side: missing blobs (HEAD, then a mount, then an
upload), child manifests, the manifest, its tag. Delivery is at least once and idempotent; an entry the parent
refuses for good, or one over its budget (sync/budget.py), is parked. An index goes up whole or not at all: one
naming manifests that are neither here (a platform the sync left out, `platforms`) nor at the parent waits for
them, holding up only its repository, and goes up once they are here."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from connected_registry.oci.manifest import OCI_INDEX, parse_manifest
from connected_registry.status import StatusBoard
from connected_registry.storage import RegistryStore
from connected_registry.storage.records import ResumableUpload
from connected_registry.sync.budget import BudgetExceeded, WalkBudget
from connected_registry.sync.parent_client import ParentClient, ParentRefused

log = logging.getLogger("connected_registry.upstream")

DRAIN_CONCURRENCY = 4  # repositories whose entries go up side by side (each one's strictly in order)
NEW_ENTRIES_WAIT_SECONDS = 5  # while entries go up, the outbox is read again at least this often (retries)
WAITING_RETRY_SECONDS = 60  # an index waiting for manifests asks the parent again this often (else on a change here)


class WaitingForManifests(Exception):
    """An index names manifests held neither here nor at the parent: its entry waits until they are here."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(f"{len(missing)} manifest(s) held neither here nor at the parent")


class Upstream:
    def __init__(self, store: RegistryStore, parent: ParentClient, status: StatusBoard) -> None:
        self.store, self.parent, self.status = store, parent, status
        self.bytes_uploaded = 0
        self.plain_parent = False  # no referrers API there: keep its referrers tag schema up to date
        self._over_budget: set[int] = set()  # parked entries that were over their budget (not refused)
        # pending entries whose index waits for manifests (WaitingForManifests): id -> (event head, monotonic time)
        # when last tried; tried again once something was written here, or after WAITING_RETRY_SECONDS
        self._waiting: dict[int, tuple[int, float]] = {}

    async def drain(self) -> int:
        """Deliver every deliverable entry; returns how many were acknowledged. The repositories go side by side,
        DRAIN_CONCURRENCY at a time, so a slow or large entry holds up only its own repository; entries written
        meanwhile are taken as they come. After a transient failure (the link) nothing new starts: the
        repositories under way finish, and the failure is raised for the engine's backoff."""
        running: dict[str, asyncio.Task] = {}
        failures: list[BaseException] = []
        delivered = 0
        try:
            while True:
                head = self.store.control.event_bounds()[1] - 1
                for repository, entries in self._deliverable().items():
                    if failures or len(running) == DRAIN_CONCURRENCY:
                        break
                    if repository not in running:
                        running[repository] = asyncio.create_task(self._drain_repository(repository, entries),
                                                                  name=f"outbox {repository}")
                if not running:
                    break
                written = asyncio.ensure_future(self.store.wait_for_events(head, NEW_ENTRIES_WAIT_SECONDS))
                try:
                    await asyncio.wait({*running.values(), written}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    written.cancel()
                for repository, task in list(running.items()):
                    if task.done():
                        del running[repository]
                        if task.exception() is not None:
                            failures.append(task.exception())
                        else:
                            delivered += task.result()
        finally:
            for task in running.values():
                task.cancel()
            await asyncio.gather(*running.values(), return_exceptions=True)
            self._report_parked(self.store.outbox())
        if failures:
            raise failures[0]
        return delivered

    def _deliverable(self) -> dict[str, list[dict]]:
        """The entries of each repository whose oldest entry is not parked (later ones wait behind a parked one),
        the repository whose oldest entry is oldest first."""
        outbox = self.store.outbox()
        self._report_parked(outbox)  # the operator may have dropped or retried some meanwhile
        queues: dict[str, list[dict]] = {}
        for entry in outbox:
            queues.setdefault(entry["repository"], []).append(entry)
        return {repository: entries for repository, entries in queues.items()
                if entries[0]["state"] != "parked" and not self._still_waiting(entries[0]["id"])}

    def retry_waiting(self) -> None:
        """Entries waiting for manifests are tried at the next drain (sync-now: the whole outbox is sent up); they
        stay known as waiting (and reported) until that try."""
        self._waiting = {entry_id: (-1, tried) for entry_id, (_, tried) in self._waiting.items()}

    def _still_waiting(self, entry_id: int) -> bool:
        """An entry found waiting for manifests, with nothing written here since and not long ago."""
        if entry_id not in self._waiting:
            return False
        head, tried = self._waiting[entry_id]
        return head == self.store.control.event_bounds()[1] and time.monotonic() - tried < WAITING_RETRY_SECONDS

    async def _drain_repository(self, repository: str, entries: list[dict]) -> int:
        delivered = 0
        for entry in entries:
            if entry["state"] == "parked":
                break  # later entries of this repository wait behind it
            reference = entry["tag"] or entry["digest"]
            try:
                await self.deliver(entry)
            except BudgetExceeded as exceeded:
                remedy = (f"`connected-registry outbox retry {entry['id']}` once the parent answers faster"
                          if exceeded.limit == "time" else
                          f"`connected-registry outbox drop {entry['id']}` and push it in smaller parts (fewer "
                          "distinct manifests and blobs, less nesting, under one manifest)")
                await self._park(entry, "UPLOAD_BUDGET_EXCEEDED", str(exceeded), operation=entry["operation"],
                                 repository=repository, reference=reference, exceeded=exceeded, remedy=remedy)
                break
            except ParentRefused as error:
                await self._park(entry, "UPLOAD_REJECTED", str(error), operation=entry["operation"],
                                 repository=repository, reference=reference, error=error, id=entry["id"])
                break
            except WaitingForManifests as waiting:
                self._waiting[entry["id"]] = (self.store.control.event_bounds()[1], time.monotonic())
                self.status.set("UPLOAD_WAITING_FOR_MANIFESTS", repository=repository, reference=reference,
                                missing=_listed(waiting.missing), id=entry["id"])
                break
            self._waiting.pop(entry["id"], None)
            await self.store.finish_outbox_entry(entry["id"])
            delivered += 1
        return delivered

    async def _park(self, entry: dict, code: str, reason: str, /, **fields: object) -> None:
        await self.store.park_outbox_entry(entry["id"], reason)
        if code == "UPLOAD_BUDGET_EXCEEDED":  # only now: until the write, the outbox still says pending
            self._over_budget.add(entry["id"])
        self.status.set(code, **fields)

    def _report_parked(self, outbox: list[dict]) -> None:
        """Each status detail of parked entries stands while an entry parked for its reason is still parked."""
        parked = {entry["id"] for entry in outbox if entry["state"] == "parked"}
        pending = {entry["id"] for entry in outbox} - parked
        self._waiting = {entry_id: tried for entry_id, tried in self._waiting.items() if entry_id in pending}
        if not self._waiting:
            self.status.clear("UPLOAD_WAITING_FOR_MANIFESTS")
        self._over_budget &= parked
        if not self._over_budget:
            self.status.clear("UPLOAD_BUDGET_EXCEEDED")
        if not parked - self._over_budget:
            self.status.clear("UPLOAD_REJECTED")

    async def deliver(self, entry: dict) -> None:
        repository, operation = entry["repository"], entry["operation"]
        budget = WalkBudget()
        if operation == "DeleteTag":
            await self.parent.delete_manifest(repository, entry["tag"])
        elif operation == "DeleteManifest":
            await self.parent.delete_manifest(repository, entry["digest"])
        else:
            if not await self.push_manifest(repository, entry["digest"], budget):
                return  # deleted locally since: a later entry says so
            if entry["tag"]:
                record = self.store.get_manifest(repository, entry["digest"])
                budget.spend()
                await self.parent.put_manifest(repository, entry["tag"], record.body, record.media_type)

    async def push_manifest(self, repository: str, digest: str, budget: WalkBudget) -> bool:
        """Send a manifest and what it names, children first, each distinct manifest and blob once (an index of
        10 indexes of 10 identical image manifests is three manifests). Its tree here is read first: one that needs
        more requests than the budget allows is refused before anything is sent; one naming manifests that are not
        here whole waits for them (WaitingForManifests), unless the parent has them already."""
        manifests, missing = await self._tree(repository, digest, budget)
        if not manifests:
            return False
        at_parent = await self._at_parent(repository, missing, budget)
        checked: set[str] = set()
        for manifest in manifests:
            record = self.store.get_manifest(repository, manifest)
            if record is None or manifest in at_parent:
                continue  # at the parent already (not here whole), or deleted here since
            parsed = parse_manifest(record.body, record.media_type)
            for blob in parsed.blobs:
                if blob.digest not in checked:
                    checked.add(blob.digest)
                    budget.spend()
                    with budget.transferring():
                        await self.push_blob(repository, blob.digest)
            budget.spend()
            await self.parent.put_manifest(repository, manifest, record.body, record.media_type)
            if parsed.subject and self.plain_parent:
                budget.spend(2)
                await self._add_to_referrers_tag(repository, parsed.subject, manifest, record, parsed.artifact_type,
                                                 parsed.annotations)
        return True

    async def _at_parent(self, repository: str, missing: dict[str, str], budget: WalkBudget) -> set[str]:
        """Of the manifests an index names that are not here whole, those the parent has (the index's other
        platforms, when it came from there); WaitingForManifests naming the others."""
        at_parent, lacking = set(), []
        for manifest, label in missing.items():
            budget.spend()
            if await self.parent.get_manifest(repository, manifest) is not None:
                at_parent.add(manifest)
            else:
                lacking.append(label)
        if lacking:
            raise WaitingForManifests(lacking)
        return at_parent

    async def _tree(self, repository: str, digest: str, budget: WalkBudget) -> tuple[list[str], dict[str, str]]:
        """The distinct manifests under `digest` that are here, each after the ones it names, and those it names
        that are not here whole (digest -> how to name it: with its platform); BudgetExceeded once they and their
        distinct blobs are more than the budget. A stack of its own: the interpreter's is small."""
        order: list[str] = []
        seen: set[str] = set()
        blobs: set[str] = set()
        missing: dict[str, str] = {}
        stack = [(digest, 0, False, digest)]
        while stack:
            current, depth, expanded, label = stack.pop()
            if expanded:
                order.append(current)
                continue
            if current in seen:
                continue
            seen.add(current)
            budget.reach(depth)
            record = self.store.get_manifest(repository, current)
            parsed = parse_manifest(record.body, record.media_type) if record is not None else None
            if current != digest and (parsed is None or any(self.store.blob_size(repository, blob.digest) is None
                                                            for blob in parsed.blobs)):
                missing[current] = label  # left out here (platforms), or filled on demand without all its blobs
            if parsed is None:
                continue  # the entry's own manifest deleted here since: a later entry says so
            blobs.update(blob.digest for blob in parsed.blobs)
            budget.afford(len(seen) + len(blobs))
            stack.append((current, depth, True, label))
            stack.extend((child.digest, depth + 1, False, f"{child.digest} ({child.platform})" if child.platform
                          else child.digest) for child in reversed(parsed.manifests) if child.digest not in seen)
            await asyncio.sleep(0)  # a large tree is read without holding up the requests of this instance
        return order, missing

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
            raise ParentRefused(f"blob {digest} is not in {repository} here (deleted since the manifest was pushed?): "
                                "push the blob again")
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
        key = ResumableUpload(self.parent.endpoints.first, repository, digest)  # one parent, any of its endpoints
        location = self.store.control.transfer_session(key)
        offset = await self.parent.upload_offset(repository, location) if location else None
        while True:
            if offset is None:
                if location:
                    await self.parent.cancel_upload(repository, location)
                location, offset = await self.parent.start_upload(repository), 0
                await self.store.control.remember_transfer_session(key, location)
            elif offset:
                log.info("resuming the upload of %s@%s at %d of %d bytes", repository, digest, offset, size)
            try:
                await self.parent.finish_upload(repository, digest, location, offset, size,
                                                lambda start: self.store.blob_chunks(digest, start, size))
            except ParentRefused as error:  # else the link: the session stays, and the next attempt resumes it
                if offset:
                    log.info("the parent did not take the upload of %s@%s resumed at %d bytes (%s): starting over",
                             repository, digest, offset, error)
                    offset = None
                    continue
                await self.parent.cancel_upload(repository, location)
                await self.store.control.forget_transfer_session(key)
                raise
            break
        await self.store.control.forget_transfer_session(key)
        self.bytes_uploaded += size - offset


def _listed(missing: list[str]) -> str:
    return ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
