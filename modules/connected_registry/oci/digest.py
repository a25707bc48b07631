"""Digests: parsing, validation and incremental hashing (sha256 and sha512)."""

from __future__ import annotations

import hashlib
import re
from typing import NamedTuple

from connected_registry.oci.errors import OciError

_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")


class Digest(NamedTuple):
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def is_digest(value: str) -> bool:
    return bool(_DIGEST_RE.match(value))


def parse_digest(value: str) -> Digest:
    """Parse a digest string; an unknown algorithm or a malformed hex part is DIGEST_INVALID."""
    if _DIGEST_RE.match(value):
        algorithm, _, hex_part = value.partition(":")
        return Digest(algorithm, hex_part)
    algorithm, sep, _ = value.partition(":")
    if sep and algorithm not in _HEX_LENGTH and re.match(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*$", algorithm):
        raise OciError(
            "DIGEST_INVALID",
            f"digest algorithm {algorithm!r} is not supported: use sha256 or sha512",
            detail={"digest": value[:200]},
        )
    raise OciError(
        "DIGEST_INVALID",
        "invalid digest: expected sha256:<64 hex> or sha512:<128 hex>",
        detail={"digest": value[:200]},
    )


def new_hasher(algorithm: str) -> "hashlib._Hash":
    if algorithm not in _HEX_LENGTH:
        raise OciError("DIGEST_INVALID", f"digest algorithm {algorithm!r} is not supported")
    return hashlib.new(algorithm)


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
