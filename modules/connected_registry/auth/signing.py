"""JWTs for the Docker token flow: an ES256 key made at first start in the data volume (mode 0600),
access tokens (an hour) and refresh tokens (for `offline_token=true` / `access_type=offline`), and per
token name the time until which its JWTs are refused (it was disabled or removed then), kept beside the
key so that neither re-enabling the token nor a restart revives them."""

from __future__ import annotations

import json
import logging
import os
import time
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connected_registry.auth.claims import Claims

ACCESS_SECONDS = 3600
REFRESH_SECONDS = 30 * 24 * 3600
_ALGORITHM = "ES256"
_EVERYONE = "*"  # not a token name: an unreadable revocations file revokes every JWT issued before the start

log = logging.getLogger("connected_registry.auth")


def load_or_create_key(data_dir: str) -> ec.EllipticCurvePrivateKey:
    directory = os.path.join(data_dir, "auth")
    path = os.path.join(directory, "token-signing-key.pem")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    try:
        with open(path, "rb") as file:
            return serialization.load_pem_private_key(file.read(), password=None)
    except FileNotFoundError:
        pass
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_private(path, pem)
    return key


def public_key_pem(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    """The public half, as PEM: what a child or a parent keeps to verify this instance's bundles (issue 17)."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def revocations_path(data_dir: str) -> str:
    return os.path.join(data_dir, "auth", "revoked-until.json")


def _write_private(path: str, content: bytes) -> None:
    """Replace `path` with `content` (mode 0600), whole or not at all."""
    temporary = f"{path}.{uuid.uuid4().hex}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temporary, path)


class TokenSigner:
    def __init__(self, key: ec.EllipticCurvePrivateKey, clock=time.time, revocations: str | None = None) -> None:
        self._key = key
        self._public = key.public_key()
        self.clock = clock  # the moment a token is issued (its iat, and the token answer's issued_at)
        self._revocations = revocations  # the file (`revocations_path`); None: kept in memory only
        self._revoked_until: dict[str, float] = {}  # lower-case token name -> time
        if revocations is not None and os.path.exists(revocations):
            try:
                with open(revocations, encoding="utf-8") as file:
                    self._revoked_until = {str(name): float(when) for name, when in json.load(file).items()}
            except (OSError, ValueError, TypeError, AttributeError) as error:
                log.warning("%s is unreadable (%s): every token issued before now is refused", revocations, error)
                self._revoked_until = {_EVERYONE: self.clock()}

    def revoke_issued_until_now(self, subject: str) -> None:
        """Refuse every JWT of `subject` issued until now: its token was disabled or removed."""
        now = self.clock()
        expired = now - REFRESH_SECONDS - 60  # every JWT issued before then has expired anyway
        self._revoked_until = {name: when for name, when in self._revoked_until.items() if when > expired}
        self._revoked_until[subject.lower()] = now
        if self._revocations is not None:
            try:
                _write_private(self._revocations, json.dumps(self._revoked_until).encode())
            except OSError as error:
                log.warning("could not record that %s's tokens are revoked (%s): a restart would revive them",
                            subject, error)

    def _revoked(self, subject: str, issued_at: float) -> bool:
        until = max(self._revoked_until.get(name, float("-inf")) for name in (subject.lower(), _EVERYONE))
        return issued_at <= until

    def issue(self, service: str, claims: Claims) -> tuple[str, int]:
        exact = self.clock()
        now = int(exact)
        lifetime = ACCESS_SECONDS if claims.kind == "access" else REFRESH_SECONDS
        payload = {
            "iss": service,
            "aud": service,
            "sub": claims.subject,
            "iat": round(exact, 3),  # to the millisecond: issued just before a disable, or just after re-enabling?
            "nbf": now - 5,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
            "typ": claims.kind,
            "cred": claims.credential,
            "access": claims.access,
        }
        return jwt.encode(payload, self._key, algorithm=_ALGORITHM), lifetime

    def verify(self, token: str, service: str, kind: str) -> Claims | None:
        """The claims of a token this instance signed for `service`, or None (forged, expired, other key...)."""
        try:
            payload = jwt.decode(
                token,
                self._public,
                algorithms=[_ALGORITHM],
                audience=service,
                issuer=service,
                options={"require": ["exp", "iat", "sub", "aud", "iss"]},
                leeway=5,
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        access = payload.get("access")
        if payload.get("typ") != kind or not isinstance(access, list):
            return None
        if self._revoked(str(payload["sub"]), payload["iat"]):
            return None
        return Claims(str(payload["sub"]), str(payload.get("cred", "")), access, kind)
