"""Azure's action strings, Docker scopes and password checks (SPEC 10)."""

from __future__ import annotations

import asyncio

import pytest

from connected_registry.auth.passwords import FREE_FAILURES, PasswordChecker, Throttled, hash_password, verify_password
from connected_registry.auth.permissions import Permissions, parse_scopes

HOLDER, ATTACKER = "192.0.2.1", "198.51.100.9"

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


def test_scopes_naming_the_same_resource_are_merged():
    scopes = parse_scopes(["repository:a/b:pull repository:a/b:push,pull", "repository:a/b:pull repository:c:pull"])
    assert [str(scope) for scope in scopes] == ["repository:a/b:pull,push", "repository:c:pull"]


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
        assert await checker.verify("tok-one", "wrong", [good], HOLDER) is None
    assert await checker.verify("tok-one", "wrong", [good], HOLDER) is None
    with pytest.raises(Throttled):
        await checker.verify("tok-one", "right", [good], HOLDER)
    assert await checker.verify("tok-two", "right", [good], HOLDER) == good
    now[0] += 31
    assert await checker.verify("tok-one", "right", [good], HOLDER) == good
    assert await checker.verify("tok-one", "wrong", [good], HOLDER) is None  # counting starts again


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
    results = await asyncio.gather(*(checker.verify(f"name{n}", "wrong", [good], HOLDER) for n in range(6)))
    assert results == [None] * 6 and peak[0] == 2


async def test_a_successful_check_is_cached_and_respects_rotation():
    checker = PasswordChecker()
    good = hash_password("right")
    assert await checker.verify("tok-one", "right", [good], HOLDER) == good
    assert await checker.verify("tok-one", "right", [hash_password("rotated")], HOLDER) is None


async def test_failures_from_one_address_never_refuse_the_right_password_from_another():
    checker = PasswordChecker()
    good = hash_password("right")
    for _ in range(FREE_FAILURES + 1):
        assert await checker.verify("tok-one", "wrong", [good], ATTACKER) is None
    with pytest.raises(Throttled):
        await checker.verify("tok-one", "wrong", [good], ATTACKER)
    assert await checker.verify("tok-one", "right", [good], HOLDER) == good
    # a verified password is never refused, not even from the throttled address
    assert await checker.verify("tok-one", "right", [good], ATTACKER) == good


async def test_unknown_names_are_limited_per_address_and_known_names_still_checked():
    checker = PasswordChecker()
    good = hash_password("right")
    for n in range(FREE_FAILURES + 1):
        assert await checker.verify(f"nobody{n}", "x", None, ATTACKER) is None
    with pytest.raises(Throttled):
        await checker.verify("nobody-else", "x", None, ATTACKER)
    assert await checker.verify("nobody-else", "x", None, HOLDER) is None
    assert await checker.verify("tok-one", "right", [good], ATTACKER) == good


async def test_a_full_queue_answers_at_once_but_not_for_a_cached_password():
    checker = PasswordChecker()
    good = hash_password("right")
    assert await checker.verify("tok-one", "right", [good], HOLDER) == good
    assert 2 <= checker.queue_limit() < 1000
    queued = [asyncio.ensure_future(checker.verify(f"name{n}", "x", None, f"192.0.2.{n}"))
              for n in range(checker.queue_limit())]
    await asyncio.sleep(0)  # let them all take their places in the queue
    with pytest.raises(Throttled):
        await checker.verify("tok-two", "right", [good], HOLDER)
    assert await checker.verify("tok-one", "right", [good], HOLDER) == good
    assert await asyncio.gather(*queued) == [None] * len(queued)
