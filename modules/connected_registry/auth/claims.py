"""What a JWT of ours says, without the JWT machinery (kept light: imported on every start)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def credential_fingerprint(password_hash: str) -> str:
    """Names which of a token's hashes a JWT came from, so rotating that hash revokes it."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Claims:
    subject: str  # token name; "" for anonymous
    credential: str  # fingerprint of the password hash used; "" for anonymous
    access: list[dict]
    kind: str  # "access" | "refresh"
