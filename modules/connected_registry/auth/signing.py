"""JWTs for the Docker token flow: an ES256 key made at first start in the data volume (mode 0600),
access tokens (an hour) and refresh tokens (for `offline_token=true` / `access_type=offline`)."""

from __future__ import annotations

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
    temporary = f"{path}.{uuid.uuid4().hex}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temporary, path)
    return key


class TokenSigner:
    def __init__(self, key: ec.EllipticCurvePrivateKey, clock=time.time) -> None:
        self._key = key
        self._public = key.public_key()
        self._clock = clock

    def issue(self, service: str, claims: Claims) -> tuple[str, int]:
        now = int(self._clock())
        lifetime = ACCESS_SECONDS if claims.kind == "access" else REFRESH_SECONDS
        payload = {
            "iss": service,
            "aud": service,
            "sub": claims.subject,
            "iat": now,
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
        return Claims(str(payload["sub"]), str(payload.get("cred", "")), access, kind)
