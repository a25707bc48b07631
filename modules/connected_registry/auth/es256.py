"""The ES256 key that signs this instance's JWTs, and the JWT encoding: all of PyJWT and cryptography the registry
uses, in one module that auth/signing.py loads at the first JWT issued or checked (about 11 MiB and 60 ms that an
instance whose clients log in with Basic never spends)."""

from __future__ import annotations

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ALGORITHM = "ES256"


def new_key_pem() -> bytes:
    """A new P-256 private key, PEM (PKCS #8, unencrypted: the file's mode keeps it private)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def private_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the token-signing key is not an elliptic-curve key")
    return key


def public_pem(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class Es256Key:
    def __init__(self, pem: bytes) -> None:
        self._key = private_key(pem)
        self._public = self._key.public_key()

    def encode(self, payload: dict) -> str:
        return jwt.encode(payload, self._key, algorithm=ALGORITHM)

    def decode(self, token: str, service: str) -> dict | None:
        """The payload of a token this key signed for `service`, still valid; None for any other."""
        try:
            return jwt.decode(token, self._public, algorithms=[ALGORITHM], audience=service, issuer=service,
                              options={"require": ["exp", "iat", "sub", "aud", "iss"]}, leeway=5)
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
