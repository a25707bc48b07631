"""Manifest media types and parsing: what a manifest references, what it is a referrer of.

The registry keeps the exact bytes it was given; this module only reads them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from connected_registry.oci.digest import is_digest
from connected_registry.oci.errors import OciError
from connected_registry.oci.platforms import Platform, describes, entry_platform

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
IMAGE_MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
MANIFEST_MEDIA_TYPES = IMAGE_MANIFESTS + INDEXES
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_DESCRIPTOR_SIZE = 2**63 - 1  # OCI sizes are int64

# Layers a registry need not hold ("foreign" / non-distributable layers).
_NON_DISTRIBUTABLE_PREFIXES = (
    "application/vnd.oci.image.layer.nondistributable.",
    "application/vnd.docker.image.rootfs.foreign.",
)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None  # an index entry's (oci.platforms)
    describes: str | None = None  # the entry an index entry is about (docker's attestation manifests)


@dataclass
class ParsedManifest:
    media_type: str
    blobs: list[Descriptor] = field(default_factory=list)  # config and layers that must exist
    manifests: list[Descriptor] = field(default_factory=list)  # an index's children
    subject: str | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _invalid(message: str) -> OciError:
    return OciError("MANIFEST_INVALID", message)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """An object whose keys are all different. With a duplicate, parsers disagree about what the manifest says
    (some keep the first value, some the last): refused, at any depth."""
    document = dict(pairs)
    if len(document) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _invalid(f"manifest has the key {key[:100]!r} twice in one object: send each key once")
            seen.add(key)
    return document


def _descriptor(raw: Any, where: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise _invalid(f"{where} must be a descriptor object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise _invalid(f"{where}.mediaType must be a non-empty string")
    if not isinstance(digest, str) or not is_digest(digest):
        raise _invalid(f"{where}.digest must be sha256:<64 hex> or sha512:<128 hex>")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_DESCRIPTOR_SIZE:
        raise _invalid(f"{where}.size must be an integer from 0 to 2^63-1")
    return Descriptor(media_type, digest, size)


def _index_entry(raw: Any, where: str) -> Descriptor:
    entry = _descriptor(raw, where)
    return Descriptor(entry.media_type, entry.digest, entry.size, entry_platform(raw.get("platform")),
                      describes(raw.get("annotations")))


def is_non_distributable(media_type: str) -> bool:
    return media_type.startswith(_NON_DISTRIBUTABLE_PREFIXES)


def parse_manifest(body: bytes, content_type: str | None) -> ParsedManifest:
    """Validate a manifest's structure and list what it references.

    The media type is the body's `mediaType`, else the request's Content-Type; the two must agree.
    """
    document = _decode(body)
    media_type = _media_type(document, content_type)
    if document.get("schemaVersion") != 2:
        raise _invalid("schemaVersion must be 2")
    parsed = ParsedManifest(media_type=media_type)
    _read_references(document, parsed)
    if "subject" in document:
        parsed.subject = _descriptor(document["subject"], "subject").digest
    annotations = document.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise _invalid("annotations must map strings to strings")
        parsed.annotations = annotations
    return parsed


def _decode(body: bytes) -> dict:
    """The manifest's JSON object: UTF-8, no duplicate keys, no NaN, nothing another client could read otherwise."""
    try:
        document = json.loads(body.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
        # Lone surrogates ("\ud800") parse, but cannot be stored or read back by other clients.
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except UnicodeError:
        raise _invalid("manifest must be UTF-8 JSON without lone surrogate escapes") from None
    except ValueError as error:
        raise _invalid(f"manifest is not valid JSON: {error}") from None
    except RecursionError:
        raise _invalid("manifest JSON is nested too deeply") from None
    if not isinstance(document, dict):
        raise _invalid("manifest must be a JSON object")
    return document


def _media_type(document: dict, content_type: str | None) -> str:
    declared = document.get("mediaType")
    content_type = (content_type or "").split(";")[0].strip() or None
    if declared is not None and not isinstance(declared, str):
        raise _invalid("mediaType must be a string")
    if content_type in DOCKER_SCHEMA1 or declared in DOCKER_SCHEMA1:
        raise _invalid("Docker schema 1 manifests are not supported: push with a client that writes schema 2 or OCI")
    if declared and content_type and declared != content_type and content_type != "application/json":
        raise _invalid(f"Content-Type {content_type!r} does not match the manifest's mediaType {declared!r}")
    media_type = declared or content_type
    if media_type in MANIFEST_MEDIA_TYPES:
        return media_type
    if media_type is None and "manifests" in document:
        return OCI_INDEX
    if media_type is None and "config" in document:
        return OCI_MANIFEST
    raise _invalid(f"unsupported manifest media type {media_type!r}: expected one of {', '.join(MANIFEST_MEDIA_TYPES)}")


def _read_references(document: dict, parsed: ParsedManifest) -> None:
    """The blobs of an image manifest (config and distributable layers), or the manifests of an index."""
    artifact_type = document.get("artifactType")
    if parsed.media_type in IMAGE_MANIFESTS:
        config = _descriptor(document.get("config"), "config")
        layers = document.get("layers")
        if not isinstance(layers, list):
            raise _invalid("layers must be a list")
        parsed.blobs.append(config)
        for number, raw in enumerate(layers):
            layer = _descriptor(raw, f"layers[{number}]")
            if not is_non_distributable(layer.media_type):
                parsed.blobs.append(layer)
        if not artifact_type and parsed.media_type == OCI_MANIFEST:  # absent or empty: the config's type
            artifact_type = config.media_type
    else:
        children = document.get("manifests")
        if not isinstance(children, list):
            raise _invalid("manifests must be a list")
        parsed.manifests = [_index_entry(raw, f"manifests[{n}]") for n, raw in enumerate(children)]
    parsed.artifact_type = artifact_type if isinstance(artifact_type, str) else None
