"""Azure's action strings, Docker scopes and password checks (SPEC 10)."""

from __future__ import annotations

import asyncio

import pytest

from connected_registry.auth.passwords import FREE_FAILURES, PasswordChecker, Throttled, hash_password, verify_password
from connected_registry.auth.permissions import Permissions, parse_scopes

ACTIONS = [
    "repositories/hello-world/content/read",
    "repositories/team/*/content/write",
    "repositories/*/metadata/read",
    "gateway/Line1-child/config/read",
]


def test_exact_prefix_and_wildcard_repository_rules():
    permissions = Permissions.from_actions(ACTIONS)
    assert permissions.allows("hello-world", "content/read")
    assert not permissions.allows("hello-world2", "content/read")
    assert permissions.allows("team/a/b", "content/write") and not permissions.allows("team", "content/write")
    assert permissions.allows("anything/at/all", "metadata/read")


def test_gateway_names_are_case_insensitive():
    permissions = Permissions.from_actions(ACTIONS)
    assert permissions.allows_gateway("line1-CHILD", "config/read")
    assert not permissions.allows_gateway("line1-child", "config/write")


def test_docker_scopes_map_to_actions_and_only_the_subset_is_granted():
    permissions = Permissions.from_actions(ACTIONS)
    scopes = parse_scopes(["repository:hello-world:pull,push,delete repository:team/x:*",
                           "registry:catalog:* gateway:line1-child:config_read,config_write"])
    assert [permissions.grant(scope) for scope in scopes] == [["pull"], ["pull", "push"], ["*"], ["config_read"]]


def test_malformed_scopes_are_skipped():
    assert parse_scopes(["nonsense", "repository::pull", "repository:x", ""]) == []


def test_password_hash_round_trip_and_bounds():
    encoded = hash_password("s3cret")
    assert encoded.startswith("scrypt$16384$8$1$")
    assert verify_password("s3cret", encoded) and not verify_password("other", encoded)
    assert not verify_password("s3cret", "scrypt$1099511627776$8$1$AAAA$AAAA")  # absurd cost refused
    assert not verify_password("s3cret", "scrypt$x$y$z$$")


async def test_failed_logins_throttle_the_name_and_success_resets_it():
    now = [1000.0]
    checker = PasswordChecker(clock=lambda: now[0])
    good = hash_password("right")
    for _ in range(FREE_FAILURES):
        assert await checker.verify("tok-one", "wrong", [good], ("name:tok-one",)) is None
    assert await checker.verify("tok-one", "wrong", [good], ("name:tok-one",)) is None
    with pytest.raises(Throttled):
        await checker.verify("tok-one", "right", [good], ("name:tok-one",))
    assert await checker.verify("tok-two", "right", [good], ("name:tok-two",)) == good
    now[0] += 31
    assert await checker.verify("tok-one", "right", [good], ("name:tok-one",)) == good
    assert await checker.verify("tok-one", "wrong", [good], ("name:tok-one",)) is None  # counting starts again


async def test_at_most_two_scrypt_checks_run_at_once(monkeypatch):
    import connected_registry.auth.passwords as passwords

    running, peak = [0], [0]
    original = passwords._match

    def counting(password, hashes):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        try:
            return original(password, hashes)
        finally:
            running[0] -= 1

    monkeypatch.setattr(passwords, "_match", counting)
    checker = PasswordChecker()
    good = hash_password("right")
    results = await asyncio.gather(*(checker.verify(f"name{n}", "wrong", [good], (f"name:{n}",)) for n in range(6)))
    assert results == [None] * 6 and peak[0] == 2


async def test_a_successful_check_is_cached_and_respects_rotation():
    checker = PasswordChecker()
    good = hash_password("right")
    assert await checker.verify("tok-one", "right", [good], ("name:tok-one",)) == good
    assert await checker.verify("tok-one", "right", [hash_password("rotated")], ("name:tok-one",)) is None
