"""The changes clients can see, each written inside one metadata write together with its events and, on a
ReadWrite child, its outbox entry: a manifest put (and tagged), a manifest or a tag deleted."""

from __future__ import annotations

from dataclasses import dataclass, replace

from connected_registry.oci.digest import digest_of, is_digest, parse_digest
from connected_registry.oci.errors import OciError
from connected_registry.oci.manifest import ParsedManifest
from connected_registry.oci.names import validate_tag
from connected_registry.storage.metadata import MetadataWrites
from connected_registry.storage.records import EventRecord, ManifestEntry
from connected_registry.timefmt import utc_timestamp


@dataclass(frozen=True)
class ManifestPut:
    """A manifest on its way in."""

    repository: str
    digest: str
    tag: str | None
    parsed: ParsedManifest
    size: int
    origin: str
    now: float
    on_demand: bool  # fetched for a client's miss: what it references stays cache content
    outbox: bool  # written here by a client of a ReadWrite child: the parent must hear of it
    left_out: frozenset[str] | None = None  # the sync's choice of the index's children absent by design; None: as is


def digest_and_tag(reference: str, body: bytes) -> tuple[str, str | None]:
    """The manifest's digest (checked against a digest reference) and its tag (None when put by digest)."""
    if not is_digest(reference):
        return digest_of(body), validate_tag(reference)
    algorithm, _ = parse_digest(reference)
    digest = digest_of(body, algorithm)
    if digest != reference:
        raise OciError("DIGEST_INVALID", f"manifest body has digest {digest}, not {reference}",
                       detail={"expected": reference, "actual": digest})
    return digest, None


def check_references(tx: MetadataWrites, repository: str, parsed: ParsedManifest,
                     absent: frozenset[str]) -> None:
    """A pushed manifest's blobs and child manifests must be in its repository already, but for the children
    `absent` by design (an index synced for some platforms only, or pushed again as it is here)."""
    missing = [blob.digest for blob in parsed.blobs if not tx.links_blob(repository, blob.digest)]
    missing += [child.digest for child in parsed.manifests
                if child.digest not in absent and tx.manifest_by_digest(repository, child.digest) is None]
    if missing:
        raise OciError(
            "MANIFEST_BLOB_UNKNOWN",
            f"manifest references {len(missing)} blob(s) or manifest(s) not in repository {repository}: "
            f"push them first ({', '.join(missing[:3])}{'…' if len(missing) > 3 else ''})",
            detail={"missing": missing[:20]},
        )


def record_put(tx: MetadataWrites, put: ManifestPut) -> None:
    """The manifest's rows (its file is written already), its tag, events and outbox entry."""
    repository, digest, parsed, now = put.repository, put.digest, put.parsed, put.now
    entry = ManifestEntry(digest, parsed.media_type, put.size, parsed.subject)
    tx.add_repository(repository, now)
    tx.add_blob(digest, put.size, put.origin, now)
    changed = False
    if tx.add_manifest(repository, digest, put.size, parsed, put.origin, now):
        tx.touch_blobs([blob.digest for blob in parsed.blobs], now)
        _event(tx, "ManifestPut", repository, None, entry, put.origin, now)
        changed = True
    if put.tag is not None and tx.tag_digest(repository, put.tag) != digest:
        tx.set_tag(repository, put.tag, digest, now)
        _event(tx, "TagSet", repository, put.tag, entry, put.origin, now)
        changed = True
    if put.left_out is not None and parsed.manifests:
        tx.set_left_out(repository, digest, put.left_out)
    if changed and put.outbox:
        tx.add_outbox_entry(repository, "PushManifest", put.tag, digest, utc_timestamp(now))
    if not put.on_demand:  # synced or pushed: what it references is no longer cache content
        tx.unlist_on_demand([digest, *(blob.digest for blob in parsed.blobs)])


def record_delete(tx: MetadataWrites, repository: str, reference: str, origin: str, now: float, outbox: bool) -> None:
    """By digest: the manifest and its tags go (ManifestDeleted). By tag: only the tag (TagDeleted)."""
    if is_digest(reference):
        entry = tx.manifest_by_digest(repository, reference)
        if entry is None:
            raise OciError("MANIFEST_UNKNOWN", f"manifest {reference} is not in repository {repository}")
        tx.remove_manifest(repository, reference)
        _event(tx, "ManifestDeleted", repository, None, entry, origin, now)
        operation, tag = "DeleteManifest", None
    else:
        entry = tx.manifest_by_tag(repository, reference)
        if entry is None:
            raise OciError("MANIFEST_UNKNOWN", f"tag {reference} is not in repository {repository}")
        tx.remove_tag(repository, reference)
        _event(tx, "TagDeleted", repository, reference, replace(entry, subject=None), origin, now)
        operation, tag = "DeleteTag", reference
    if outbox:
        tx.add_outbox_entry(repository, operation, tag, entry.digest, utc_timestamp(now))


def _event(tx: MetadataWrites, kind: str, repository: str, tag: str | None, entry: ManifestEntry, origin: str,
           now: float) -> None:
    tx.add_event(EventRecord(kind, repository, tag, entry.digest, entry.media_type, entry.size, entry.subject, origin,
                             utc_timestamp(now)))
