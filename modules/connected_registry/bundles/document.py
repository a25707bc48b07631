"""The bundle manifest (what a bundle holds: repositories, their complete tag listings, the manifests and blobs
it carries, the exporting instance, its event cursor, the time), signed as a compact JWS with the exporter's
ES256 key (the token service's, auth/signing.py) and named by the public key's fingerprint; and the inventory a
receiving side writes so that the next bundle carries only what it lacks."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connected_registry.oci.digest import is_digest
from connected_registry.oci.errors import OciError
from connected_registry.oci.names import validate_name

BUNDLE_FILE = "connected-registry-bundle.jws"
BUNDLE_KIND = "connected-registry-bundle"
INVENTORY_KIND = "connected-registry-inventory"
_JWS_TYPE = "connected-registry-bundle+jws"
OPERATIONS = ("PushManifest", "DeleteTag", "DeleteManifest")  # an outbox entry's
_ALGORITHM = "ES256"


def fingerprint(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    """sha256 of the public key's DER SubjectPublicKeyInfo: what a bundle names its signer by."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def load_public_key(pem: str | bytes, source: str) -> ec.EllipticCurvePublicKey:
    """A trusted key given as a PEM public key (or the private key it belongs to)."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        if b"PRIVATE KEY" in data:
            return serialization.load_pem_private_key(data, password=None).public_key()
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as error:
        raise OciError("BUNDLE_INVALID", f"{source} is not a PEM public key: {error}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise OciError("BUNDLE_INVALID", f"{source} is not an ES256 (P-256) public key")
    return key


@dataclass
class RepositoryListing:
    """One repository of a bundle: its complete tag listing, the manifests and blobs carried for it."""

    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest
    manifests: dict[str, str] = field(default_factory=dict)  # digest -> media type, carried in the bundle
    blobs: list[str] = field(default_factory=list)  # blob digests carried that this repository's images need


@dataclass
class BundleManifest:
    exporter: dict  # name, instanceId, keyFingerprint
    cursor: int | None  # the exporter's next event sequence when it exported
    time: str
    repositories: dict[str, RepositoryListing]
    blobs: dict[str, int]  # every file under blobs/ the bundle carries (manifests included) -> its size
    direction: str = "downstream"  # or "outbox": a ReadWrite child's pushes going up
    operations: list[dict] = field(default_factory=list)  # outbox: its entries in order (id, operation, ...)
    platforms: list[str] | None = None  # export --platform: the platforms an index's images were kept for
    signed: bool = True  # False: a plain OCI layout imported with --unsigned

    def to_json(self) -> dict:
        return {"kind": BUNDLE_KIND, "version": 1, "direction": self.direction, "exporter": self.exporter,
                "cursor": self.cursor, "time": self.time, "blobs": self.blobs, "operations": self.operations,
                "platforms": self.platforms,
                "repositories": {name: {"tags": listing.tags, "manifests": listing.manifests,
                                        "blobs": listing.blobs}
                                 for name, listing in sorted(self.repositories.items())}}

    @classmethod
    def from_json(cls, document: object) -> "BundleManifest":
        try:
            if not isinstance(document, dict) or document.get("kind") != BUNDLE_KIND:
                raise ValueError("not a connected-registry bundle manifest")
            repositories = {str(name): RepositoryListing(dict(entry["tags"]), dict(entry["manifests"]),
                                                         list(entry["blobs"]))
                            for name, entry in document["repositories"].items()}
            for name in repositories:
                validate_name(name)  # a signer's word does not make a bad name good
            blobs = {str(digest): int(size) for digest, size in document["blobs"].items()}
            if not all(is_digest(digest) for digest in blobs):
                raise ValueError("a blob name is not a digest")
            operations = [dict(operation) for operation in document.get("operations") or []]
            if not all(operation.get("operation") in OPERATIONS for operation in operations):
                raise ValueError("an outbox operation is unknown")
            platforms = document.get("platforms")
            return cls(dict(document["exporter"]), document.get("cursor"), str(document["time"]), repositories,
                       blobs, str(document.get("direction", "downstream")), operations,
                       [str(platform) for platform in platforms] if isinstance(platforms, list) else None)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise OciError("BUNDLE_INVALID", f"the signed bundle manifest is malformed: {error}") from None


def sign(manifest: BundleManifest, key: ec.EllipticCurvePrivateKey) -> bytes:
    payload = json.dumps(manifest.to_json(), sort_keys=True, separators=(",", ":")).encode()
    token = jwt.api_jws.encode(payload, key, algorithm=_ALGORITHM, headers={"kid": fingerprint(key), "typ": _JWS_TYPE})
    return token.encode() if isinstance(token, str) else token


def verify(signed: bytes, trusted: ec.EllipticCurvePublicKey) -> BundleManifest:
    """The bundle manifest, once its signature verifies with the trusted key; else BUNDLE_UNTRUSTED naming why."""
    expected = fingerprint(trusted)
    try:
        header = jwt.get_unverified_header(signed)
    except jwt.PyJWTError as error:
        raise OciError("BUNDLE_UNTRUSTED", f"the signed bundle manifest ({BUNDLE_FILE}) is unreadable: {error}") \
            from None
    if header.get("kid") != expected:
        raise OciError("BUNDLE_UNTRUSTED", f"the bundle is signed by key {header.get('kid')}, not by the trusted "
                       f"key {expected}: it comes from another instance (give that instance's key with "
                       "--trust-key FILE if you trust it)")
    try:
        payload = jwt.api_jws.decode_complete(signed, key=trusted, algorithms=[_ALGORITHM])["payload"]
    except jwt.PyJWTError as error:
        raise OciError("BUNDLE_UNTRUSTED", f"the signature of the bundle manifest ({BUNDLE_FILE}) does not verify "
                       f"with the trusted key {expected}: {error}; the manifest was changed after signing") from None
    try:
        return BundleManifest.from_json(json.loads(payload))
    except ValueError as error:
        raise OciError("BUNDLE_INVALID", f"the signed bundle manifest is not JSON: {error}") from None


@dataclass(frozen=True)
class TrustedKey:
    """A key this instance trusts, and for what: "parent" (its content, learned at activation), "child" (`name`'s
    outbox, learned at its activation here), "given" (`--trust-key FILE`: anything signed with it)."""

    key: ec.EllipticCurvePublicKey
    role: str
    name: str | None = None

    def allows(self, manifest: BundleManifest) -> bool:
        if self.role == "given":
            return True
        if manifest.direction == "outbox":
            return self.role == "child" and str(manifest.exporter.get("name", "")).lower() == self.name
        return self.role == "parent"


def verify_trusted(signed: bytes, trusted: list[TrustedKey]) -> BundleManifest:
    """The bundle manifest, verified with the trusted key that signed it and trusted for what it carries."""
    try:
        kid = jwt.get_unverified_header(signed).get("kid")
    except jwt.PyJWTError:
        kid = None
    chosen = next((candidate for candidate in trusted if fingerprint(candidate.key) == kid), trusted[0])
    manifest = verify(signed, chosen.key)
    if not chosen.allows(manifest):
        raise OciError("BUNDLE_UNTRUSTED", f"the bundle ({manifest.direction}, from "
                       f"{manifest.exporter.get('name')}) is signed with the key of {chosen.name or 'the parent'}, "
                       "which is trusted only for its own "
                       f"{'outbox' if chosen.role == 'child' else 'content'}: give --trust-key FILE if you trust it")
    return manifest


@dataclass
class Inventory:
    """What a receiving side holds in scope: manifests per repository, blob digests, and the bundle cursors it
    imported; the exporter leaves all of that out (`export --have FILE`)."""

    instance: dict
    manifests: dict[str, set[str]]
    blobs: set[str]
    cursors: dict[str, int]

    def to_json(self) -> dict:
        return {"kind": INVENTORY_KIND, "version": 1, "instance": self.instance, "cursors": self.cursors,
                "repositories": {name: sorted(digests) for name, digests in sorted(self.manifests.items())},
                "blobs": sorted(self.blobs)}

    @classmethod
    def from_json(cls, document: object, source: str) -> "Inventory":
        try:
            if not isinstance(document, dict) or document.get("kind") != INVENTORY_KIND:
                raise ValueError("not an inventory written by `connected-registry inventory`")
            return cls(dict(document.get("instance") or {}),
                       {str(name): set(digests) for name, digests in document["repositories"].items()},
                       set(document["blobs"]), dict(document.get("cursors") or {}))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise OciError("REQUEST_INVALID", f"{source} is not a usable inventory: {error}") from None
