"""JWTs for the Docker token flow: an ES256 key made at the first JWT in the data volume (mode 0600),
access tokens (an hour) and refresh tokens (for `offline_token=true` / `access_type=offline`), and per
token name the time until which its JWTs are refused (it was disabled or removed then), kept beside the
key so that neither re-enabling the token nor a restart revives them."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import time
import uuid
from typing import TYPE_CHECKING

from connected_registry.auth.claims import Claims

if TYPE_CHECKING:
    from connected_registry.auth.es256 import Es256Key

TOKEN_KEY_VARIABLE = "ACR_REGISTRY_TOKEN_KEY_FILE"
ACCESS_SECONDS = 3600
REFRESH_SECONDS = 30 * 24 * 3600
_EVERYONE = "*"  # not a token name: an unreadable revocations file revokes every JWT issued before the start

log = logging.getLogger("connected_registry.auth")


def key_pem(data_dir: str) -> bytes:
    """The instance's ES256 private key as PEM, read from the volume, made there the first time (the JWTs and the
    offline bundles sign with it). Made but not kept when the volume refuses it: it then lasts until a restart."""
    path = key_path(data_dir)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:
        pass
    # Imported here: it loads cryptography (with PyJWT, about 11 MiB), which Basic logins never need.
    from connected_registry.auth.es256 import new_key_pem

    pem = new_key_pem()
    try:
        return _write_private_once(path, pem)
    except OSError as error:  # a full or read-only volume: the tokens still work, until a restart
        log.warning("could not keep the token-signing key in %s (%s): the JWTs issued until the next start are "
                    "refused after it, and their clients log in again", path, error)
    return pem


def load_or_create_key(data_dir: str):
    """The key itself (cryptography's EllipticCurvePrivateKey), for signing bundles (issue 17)."""
    from connected_registry.auth.es256 import private_key  # deferred: cryptography, as above

    return private_key(key_pem(data_dir))


def public_key_pem(key) -> str:
    """The public half, as PEM: what a child or a parent keeps to verify this instance's bundles (issue 17)."""
    from connected_registry.auth.es256 import public_pem  # deferred: cryptography, as above

    return public_pem(key)


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


def _write_private_once(path: str, content: bytes) -> bytes:
    """Put `content` at `path` (mode 0600) unless a key is there already; returns the key that is there. Replicas
    sharing one key file may make it at the same moment: the first link wins, the others read it."""
    temporary = f"{path}.{uuid.uuid4().hex}"
    _write_private(temporary, content)
    try:
        os.link(temporary, path)
    except FileExistsError:
        with open(path, "rb") as file:
            content = file.read()
    finally:
        os.unlink(temporary)
    return content


def key_path(data_dir: str) -> str:
    """The data volume's key, or the one ACR_REGISTRY_TOKEN_KEY_FILE names: replicas of one registry sign and check
    each other's JWTs with one key (a Secret they all mount), as a client's requests land on any of them."""
    return os.environ.get(TOKEN_KEY_VARIABLE) or os.path.join(data_dir, "auth", "token-signing-key.pem")


def check_key_file(path: str) -> None:
    """Raises ValueError, naming the file and the way out, when the key file is there but is not a PEM private key
    (cut short, overwritten): checked at start without loading cryptography, which reads the key at the first JWT."""
    try:
        with open(path, "rb") as file:
            pem = file.read(64 << 10)
    except FileNotFoundError:
        return
    except OSError as error:
        raise ValueError(f"cannot read the token-signing key {path}: {error}") from error
    lines = pem.strip().splitlines()
    try:
        body = base64.b64decode(b"".join(lines[1:-1]), validate=True) if len(lines) > 2 else b""
    except binascii.Error:
        body = b""
    if not (lines and lines[0].startswith(b"-----BEGIN ") and lines[0].endswith(b"PRIVATE KEY-----")
            and lines[-1].startswith(b"-----END ") and body[:1] == b"\x30"):  # a DER SEQUENCE
        raise ValueError(f"the token-signing key {path} is damaged (not a PEM private key): move it away and start "
                         "again to make a new one; tokens issued with the old key are then refused, and their "
                         "clients log in again")


class TokenSigner:
    """Signs and checks this instance's JWTs with the key in `data_dir`/auth (made at the first JWT), and keeps the
    revocations beside it."""

    def __init__(self, data_dir: str, clock=time.time) -> None:
        self._directory = os.path.join(data_dir, "auth")
        os.makedirs(self._directory, mode=0o700, exist_ok=True)
        self._key: Es256Key | None = None
        check_key_file(key_path(data_dir))  # a damaged key fails the start, as it did when it was read there
        self.clock = clock  # the moment a token is issued (its iat, and the token answer's issued_at)
        self._revocations = os.path.join(self._directory, "revoked-until.json")
        self._revoked_until: dict[str, float] = {}  # lower-case token name -> time
        if os.path.exists(self._revocations):
            try:
                with open(self._revocations, encoding="utf-8") as file:
                    self._revoked_until = {str(name): float(when) for name, when in json.load(file).items()}
            except (OSError, ValueError, TypeError, AttributeError) as error:
                log.warning("%s is unreadable (%s): every token issued before now is refused", self._revocations,
                            error)
                self._revoked_until = {_EVERYONE: self.clock()}

    def _signing_key(self) -> "Es256Key":
        """The key, read from the volume (made there the first time) when the first JWT is issued or checked."""
        if self._key is None:
            # Imported here, once: it loads PyJWT and cryptography (about 11 MiB), which Basic logins never need.
            from connected_registry.auth.es256 import Es256Key

            pem = key_pem(os.path.dirname(self._directory))
            self._key = Es256Key(pem)
        return self._key

    def revoke_issued_until_now(self, subject: str) -> None:
        """Refuse every JWT of `subject` issued until now: its token was disabled or removed."""
        now = self.clock()
        expired = now - REFRESH_SECONDS - 60  # every JWT issued before then has expired anyway
        self._revoked_until = {name: when for name, when in self._revoked_until.items() if when > expired}
        self._revoked_until[subject.lower()] = now
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
        return self._signing_key().encode(payload), lifetime

    def verify(self, token: str, service: str, kind: str) -> Claims | None:
        """The claims of a token this instance signed for `service`, or None (forged, expired, other key...)."""
        payload = self._signing_key().decode(token, service)
        if payload is None:
            return None
        access = payload.get("access")
        if payload.get("typ") != kind or not isinstance(access, list):
            return None
        if self._revoked(str(payload["sub"]), payload["iat"]):
            return None
        return Claims(str(payload["sub"]), str(payload.get("cred", "")), access, kind)
