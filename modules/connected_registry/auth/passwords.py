"""Token passwords: scrypt hashes (`scrypt$N$r$p$salt$hash`), checked at most two at a time with a
bounded queue, a short cache of successes, a dummy check for unknown names, and throttling of failures."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_KEY_LENGTH = 32
CACHE_SECONDS = 300
MAX_CONCURRENT_CHECKS = 2
MAX_WAIT_SECONDS = 1.0  # the queue holds about this much checking: beyond it, 429 at once
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


# What an unknown name is checked against: the same work as a real check, and no password matches it (its key is
# random, not derived). Made without scrypt, so that loading this module costs neither 40 ms nor 16 MiB.
_DUMMY_HASH = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(os.urandom(16))}${_b64(os.urandom(_KEY_LENGTH))}"


_UNKNOWN_NAMES_FROM = "unknown-names-from:"
_FAILED = "too many failed logins from this address: check the token name and password"


class Throttled(Exception):
    def __init__(self, retry_after: float, message: str) -> None:
        self.retry_after = retry_after
        super().__init__(message)


@dataclass
class _Failures:
    count: int = 0
    blocked_until: float = 0.0


@dataclass
class PasswordChecker:
    """Checks a (name, password) against a token's hashes. Returns the matching hash or None.

    In this order: a password in the verified cache passes (never throttled, never queued); then failures
    are throttled per (name, client address), and unknown names per client address, so nobody's failures
    lock out a holder elsewhere; then a bounded queue: when full, 429 at once rather than a wait of
    minutes. Within those, an unknown name costs a dummy check, as long as a known one."""

    clock: callable = time.monotonic
    _secret: bytes = field(default_factory=lambda: os.urandom(32))
    _cache: dict[bytes, tuple[float, str]] = field(default_factory=dict)
    _failures: dict[str, _Failures] = field(default_factory=dict)
    _in_flight: dict[str, int] = field(default_factory=dict)  # throttle key -> checks running or waiting
    # Its own threads, whose queue starts the next check as one ends: not the event loop's turn, which a
    # flood of connections makes long.
    _threads: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        MAX_CONCURRENT_CHECKS, thread_name_prefix="password-check"))
    _pending: int = 0  # all checks running or waiting
    _check_seconds: float = 0.05  # how long one check takes here, a moving average

    def queue_limit(self) -> int:
        """How many checks may run or wait: about `MAX_WAIT_SECONDS` of them at the pace measured."""
        return max(MAX_CONCURRENT_CHECKS, int(MAX_CONCURRENT_CHECKS * MAX_WAIT_SECONDS / self._check_seconds))

    def _cache_key(self, name: str, password: str) -> bytes:
        return hmac.new(self._secret, f"{name.lower()}\0{password}".encode(), hashlib.sha256).digest()

    def _remembered(self, key: bytes, hashes: list[str] | None) -> str | None:
        """The hash this password matched within the last CACHE_SECONDS, when it is still one of the token's."""
        cached = self._cache.get(key)
        return cached[1] if cached and cached[0] > self.clock() and hashes and cached[1] in hashes else None

    def remembers(self, name: str, password: str, hashes: list[str] | None) -> bool:
        """Whether `verify` would pass at once, from its cache: no new login, only its credentials again."""
        return self._remembered(self._cache_key(name, password), hashes) is not None

    @staticmethod
    def _throttle_keys(name: str, hashes: list[str] | None, address: str | None) -> tuple[str, ...]:
        keys = (f"name:{name.lower()[:60]}@{address or ''}",)
        if hashes is None and address:
            keys += (f"{_UNKNOWN_NAMES_FROM}{address}",)
        return keys

    def _check_blocked(self, keys: tuple[str, ...]) -> None:
        now = self.clock()
        for key in keys:
            state = self._failures.get(key)
            if state and state.blocked_until > now:
                raise Throttled(state.blocked_until - now, _FAILED)

    def _admit(self, keys: tuple[str, ...]) -> None:
        """Refuse a check whose key is blocked, or whose checks in flight would use up what is left of its
        free failures (one at a time once they are spent), so that a burst cannot outrun its throttle.
        Unknown names only ever fail; a known name's first checks are not held back (a holder's burst)."""
        self._check_blocked(keys)
        for key in keys:
            state = self._failures.get(key) or _Failures()
            if (state.count or key.startswith(_UNKNOWN_NAMES_FROM)) and \
                    self._in_flight.get(key, 0) >= max(1, FREE_FAILURES + 1 - state.count):
                raise Throttled(1, _FAILED)
        if self._pending >= self.queue_limit():
            raise Throttled(1, "too many logins are being checked at once")

    def _record_failure(self, keys: tuple[str, ...]) -> None:
        now = self.clock()
        for key in keys:
            state = self._failures.pop(key, None) or _Failures()  # re-inserted last: the oldest go first
            self._failures[key] = state
            state.count += 1
            if state.count > FREE_FAILURES:
                state.blocked_until = now + min(2 ** (state.count - FREE_FAILURES - 1), MAX_THROTTLE_SECONDS)
        if len(self._failures) > 10_000:  # forget the oldest, so junk names cannot grow memory
            for key in list(self._failures)[:5_000]:
                del self._failures[key]

    async def verify(self, name: str, password: str, hashes: list[str] | None, address: str | None) -> str | None:
        """`hashes` None means no such (enabled) token: a dummy check keeps the timing the same.
        `address`: the client's, where known (None for a Unix socket)."""
        key = self._cache_key(name, password)
        now = self.clock()
        remembered = self._remembered(key, hashes)
        if remembered is not None:
            return remembered
        throttle_keys = self._throttle_keys(name, hashes, address)
        self._admit(throttle_keys)
        self._pending += 1
        for throttle_key in throttle_keys:
            self._in_flight[throttle_key] = self._in_flight.get(throttle_key, 0) + 1

        def check() -> str | None | Throttled:
            try:
                self._check_blocked(throttle_keys)  # the address may have been blocked while this waited
            except Throttled as throttled:
                return throttled
            started = time.perf_counter()
            result = _match(password, hashes)
            self._check_seconds = 0.8 * self._check_seconds + 0.2 * (time.perf_counter() - started)
            return result

        try:
            matched = await asyncio.get_running_loop().run_in_executor(self._threads, check)
            if isinstance(matched, Throttled):
                raise matched
        finally:
            self._pending -= 1
            for throttle_key in throttle_keys:
                self._in_flight[throttle_key] -= 1
                if not self._in_flight[throttle_key]:
                    del self._in_flight[throttle_key]
        if matched is None:
            self._record_failure(throttle_keys)
            return None
        self._failures.pop(throttle_keys[0], None)
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
