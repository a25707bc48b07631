"""Token passwords: scrypt hashes (`scrypt$N$r$p$salt$hash`), checked at most two at a time,
with a short cache of successes, a dummy check for unknown names, and throttling of failures."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass, field

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_KEY_LENGTH = 32
CACHE_SECONDS = 300
MAX_CONCURRENT_CHECKS = 2
FREE_FAILURES = 4  # failures before throttling starts
MAX_THROTTLE_SECONDS = 30.0


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=_KEY_LENGTH)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def new_password() -> str:
    return secrets.token_urlsafe(32)


def verify_password(password: str, encoded: str) -> bool:
    """Blocking (tens of ms of CPU and 16 MiB): call through `PasswordChecker`."""
    try:
        _, n, r, p, salt, expected = encoded.split("$")
        n, r, p = int(n), int(r), int(p)
        salt_bytes, expected_bytes = base64.b64decode(salt), base64.b64decode(expected)
    except ValueError:
        return False
    # Bound the work an attacker-chosen hash in the twin could ask for.
    if not (2**10 <= n <= 2**17 and n & (n - 1) == 0 and 1 <= r <= 16 and 1 <= p <= 4 and expected_bytes):
        return False
    try:
        actual = hashlib.scrypt(password.encode(), salt=salt_bytes, n=n, r=r, p=p, dklen=len(expected_bytes),
                                maxmem=256 * 1024 * 1024)
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected_bytes)


_DUMMY_HASH = hash_password(secrets.token_hex(16))


class Throttled(Exception):
    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"too many failed logins; retry in {retry_after:.0f} s")


@dataclass
class _Failures:
    count: int = 0
    blocked_until: float = 0.0


@dataclass
class PasswordChecker:
    """Checks a (name, password) against a token's hashes. Returns the matching hash or None."""

    clock: callable = time.monotonic
    _secret: bytes = field(default_factory=lambda: os.urandom(32))
    _cache: dict[bytes, tuple[float, str]] = field(default_factory=dict)
    _failures: dict[str, _Failures] = field(default_factory=dict)
    _semaphore: asyncio.Semaphore | None = None

    def _cache_key(self, name: str, password: str) -> bytes:
        return hmac.new(self._secret, f"{name.lower()}\0{password}".encode(), hashlib.sha256).digest()

    def check_throttle(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            state = self._failures.get(key)
            if state and state.blocked_until > now:
                raise Throttled(state.blocked_until - now)

    def _record_failure(self, keys: tuple[str, ...]) -> None:
        now = self.clock()
        for key in keys:
            state = self._failures.setdefault(key, _Failures())
            state.count += 1
            if state.count > FREE_FAILURES:
                state.blocked_until = now + min(2 ** (state.count - FREE_FAILURES - 1), MAX_THROTTLE_SECONDS)
        if len(self._failures) > 10_000:  # forget the oldest, so junk names cannot grow memory
            for key in list(self._failures)[:5_000]:
                del self._failures[key]

    async def verify(self, name: str, password: str, hashes: list[str] | None, throttle_keys: tuple[str, ...]) -> str | None:
        """`hashes` None means no such (enabled) token: a dummy check keeps the timing the same."""
        self.check_throttle(*throttle_keys)
        key = self._cache_key(name, password)
        cached = self._cache.get(key)
        now = self.clock()
        if cached and cached[0] > now and hashes and cached[1] in hashes:
            return cached[1]
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)
        async with self._semaphore:
            matched = await asyncio.get_running_loop().run_in_executor(None, _match, password, hashes)
        if matched is None:
            self._record_failure(throttle_keys)
            return None
        for throttle_key in throttle_keys:
            self._failures.pop(throttle_key, None)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + CACHE_SECONDS, matched)
        return matched


def _match(password: str, hashes: list[str] | None) -> str | None:
    if not hashes:
        verify_password(password, _DUMMY_HASH)
        return None
    for encoded in hashes:
        if verify_password(password, encoded):
            return encoded
    return None
