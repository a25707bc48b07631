"""Login floods and throttling at the password check (issue 14, findings 4 and 5), against real `serve`
processes over real HTTP.

A flood of Basic logins with random unknown names (each used to cost a dummy scrypt check, two at a time,
with no throttle because every name is new) must not starve a real first login, and must be answered
`429` at once; eight wrong passwords a second for one token name, sent from another address, must not
refuse the right password of the name's holder, a child's sync token included."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from tests.api.auth_fixtures import PASSWORDS, start_secured, standard_tokens
from tests.faults.conftest import figures
from tests.support.http import basic, request
from tests.support.oci import image_manifest, sha256
from tests.support.processes import wait_until
from tests.sync.hierarchy import READER, WRITER, start_instance, sync_token_for

FLOOD_CONNECTIONS = 1500
FLOOD_SECONDS = 2.0  # how long the flood goes on once under way
PACE_SECONDS = 1.0  # each flood connection sends a login a second, or as soon as its last was answered
REAL_LOGIN_SECONDS = 2.0
ATTACKER = "127.0.0.2"  # another loopback address: another client, as far as the registry can tell


class Flood:
    """`connections` clients, each sending Basic logins with random unknown names, one after another, until
    stopped. Kept: each answer's status, seconds and error code, and when every connection had sent its first
    request (the flood is then under way: later answers no longer include connecting)."""

    def __init__(self, url: str, connections: int, forwarded_for=None) -> None:
        self.url, self.connections, self.forwarded_for = url, connections, forwarded_for
        self.answers: list[tuple[int, float, str, float]] = []  # (status, seconds, error code, sent at)
        self.sent: set[int] = set()  # the clients that sent a request
        self.under_way_at = float("inf")
        self.stop = asyncio.Event()

    async def _client(self, session: aiohttp.ClientSession, number: int) -> None:
        while not self.stop.is_set():
            headers = basic(f"nobody-{os.urandom(6).hex()}", "guess")
            if self.forwarded_for:
                headers["X-Forwarded-For"] = self.forwarded_for(number)
            started = time.monotonic()
            async with session.get(f"{self.url}/v2/", headers=headers, trace_request_ctx=number) as response:
                body = await response.json(content_type=None)
                answer = (response.status, time.monotonic() - started, body["errors"][0]["code"], started)
                self.answers.append(answer)
            with contextlib.suppress(TimeoutError):  # the flood's pace, not a wait for a condition
                await asyncio.wait_for(self.stop.wait(), timeout=max(0.0, started + PACE_SECONDS - time.monotonic()))

    async def _headers_sent(self, session, context, params) -> None:
        self.sent.add(context.trace_request_ctx)
        if len(self.sent) == self.connections and self.under_way_at == float("inf"):
            self.under_way_at = time.monotonic()

    async def until(self, running: asyncio.Future, condition) -> None:
        async with asyncio.timeout(20):
            while not condition() and not running.done():
                await asyncio.sleep(0.05)  # poll the clients' progress
        if running.done():
            running.result()  # the flood's own error

    async def run(self) -> None:
        tracing = aiohttp.TraceConfig()
        tracing.on_request_headers_sent.append(self._headers_sent)
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, trace_configs=[tracing]) as session:
            await asyncio.gather(*(self._client(session, n) for n in range(self.connections)))

    @property
    def statuses(self) -> set[int]:
        return {status for status, _, _, _ in self.answers}

    def seconds(self, status: int) -> list[float]:
        """How long the answers with `status` took, sorted, of the requests sent once the flood was under way."""
        return sorted(seconds for answer, seconds, _, sent in self.answers
                      if answer == status and sent > self.under_way_at)


@contextlib.asynccontextmanager
async def flooding(flood: Flood):
    """`flood` runs in the block, which starts once every connection sent a request."""
    running = asyncio.ensure_future(flood.run())
    try:
        await flood.until(running, lambda: flood.under_way_at < float("inf"))
        yield running
    finally:
        flood.stop.set()
        await asyncio.wait([running], timeout=5)  # each client finishes the request it is waiting for
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        figures["hostile: unknown-name login flood connections tried"] += flood.connections
        figures["hostile: unknown-name login flood requests answered"] += len(flood.answers)


async def real_login_during(flood: Flood, login) -> float:
    """The seconds `login` (blocking, in a thread) takes in the middle of `flood`, which goes on after it."""
    async with flooding(flood) as running:
        await flood.until(running, lambda: time.monotonic() > flood.under_way_at + PACE_SECONDS / 2)
        started = time.monotonic()
        await asyncio.wait_for(asyncio.to_thread(login), timeout=15)
        seconds = time.monotonic() - started
        await flood.until(running, lambda: time.monotonic() > started + FLOOD_SECONDS)
        return seconds


def first_login(url: str, name: str, password: str, headers: dict | None = None):
    """docker login: a token from the token service with Basic credentials (never checked before)."""
    def login() -> None:
        try:
            reply = request(f"{url}/acr/oauth2/token?service=factory-root",
                            headers={**basic(name, password), **(headers or {})}, timeout=REAL_LOGIN_SECONDS * 3)
        except TimeoutError:
            raise AssertionError(f"a real first login got no answer in {REAL_LOGIN_SECONDS * 3} s") from None
        assert reply.status == 200, (reply.status, reply.body)

    return login


def record_real_login(seconds: float) -> None:
    figures["hostile: real logins during the flood tried"] += 1
    figures["hostile: real logins during the flood, slowest (ms)"] = max(
        figures["hostile: real logins during the flood, slowest (ms)"], int(seconds * 1000))
    if seconds < REAL_LOGIN_SECONDS:
        figures["hostile: real logins during the flood held"] += 1


@pytest.fixture
def registry(tmp_path: Path):
    registry = start_secured(tmp_path)
    try:
        yield registry
    finally:
        registry.process.stop()


def checked(flood: Flood) -> int:
    """How many of the flood's unknown names got a password check (a 401) rather than a 429."""
    return sum(1 for status, _, _, _ in flood.answers if status == 401)


def assert_refused_at_once(flood: Flood) -> None:
    refusals = flood.seconds(429)
    assert flood.statuses <= {401, 429} and len(refusals) > checked(flood), flood.statuses
    assert refusals[len(refusals) * 9 // 10] < 1.0, f"429s were not answered at once: {refusals[-1]:.1f} s"


async def test_a_flood_of_unknown_names_from_one_address_is_refused_at_once_and_a_real_login_gets_through(registry):
    flood = Flood(registry.url, FLOOD_CONNECTIONS)
    # The real login comes from the flood's own address: behind a proxy all clients may share one.
    seconds = await real_login_during(flood, first_login(registry.url, "writer1", PASSWORDS["writer1"]))
    record_real_login(seconds)
    assert seconds < REAL_LOGIN_SECONDS, f"a real first login took {seconds:.1f} s during the flood"
    assert_refused_at_once(flood)
    assert checked(flood) <= 20, f"{checked(flood)} unknown names from one address were checked"
    figures["hostile: unknown-name login flood connections held"] += flood.connections
    # The address is refused unknown names for a while; known names are still checked there.
    reply = request(f"{registry.url}/v2/", headers=basic("nobody-at-all", "x"))
    assert reply.status == 429 and reply.error_code == "TOOMANYREQUESTS" and int(reply.headers["Retry-After"]) >= 1
    assert request(f"{registry.url}/v2/", headers=basic("reader1", PASSWORDS["reader1"])).status == 200


async def test_behind_a_trusted_proxy_unknown_names_are_limited_per_forwarded_address_and_the_queue_is_bounded(
        tmp_path: Path):
    registry = start_secured(tmp_path, {"name": "factory-root", "tokens": standard_tokens(),
                                        "trustedProxies": ["127.0.0.1/32"]})
    try:
        # One forwarded address: limited like a direct one; a client behind the same proxy logs in.
        flood = Flood(registry.url, FLOOD_CONNECTIONS, forwarded_for=lambda number: "203.0.113.7")
        seconds = await real_login_during(flood, first_login(registry.url, "writer1", PASSWORDS["writer1"],
                                                             {"X-Forwarded-For": "203.0.113.8"}))
        record_real_login(seconds)
        assert seconds < REAL_LOGIN_SECONDS, f"a real first login took {seconds:.1f} s during the flood"
        assert_refused_at_once(flood)
        assert checked(flood) <= 20, f"{checked(flood)} unknown names from one address were checked"
        reply = request(f"{registry.url}/v2/", headers={"X-Forwarded-For": "203.0.113.7", **basic("nobody-1", "x")})
        assert reply.status == 429
        reply = request(f"{registry.url}/v2/", headers={"X-Forwarded-For": "203.0.113.9", **basic("nobody-1", "x")})
        assert reply.status == 401
        figures["hostile: unknown-name login flood connections held"] += flood.connections

        # Each connection from its own address: the per-address limit hardly helps, the queue's bound must.
        flood = Flood(registry.url, FLOOD_CONNECTIONS,
                      forwarded_for=lambda number: f"198.51.{number // 250}.{number % 250}")
        async with flooding(flood) as running:
            await flood.until(running, lambda: time.monotonic() > flood.under_way_at + FLOOD_SECONDS)
        assert_refused_at_once(flood)
        waited = flood.seconds(401)
        assert waited and waited[-1] < 5.0, f"a password check waited {waited[-1]:.1f} s in the queue"
        figures["hostile: unknown-name login flood connections held"] += flood.connections
        # Once the flood is gone, a first login goes through at once.
        started = time.monotonic()
        first_login(registry.url, "reader1", PASSWORDS["reader1"], {"X-Forwarded-For": "203.0.113.8"})()
        assert time.monotonic() - started < REAL_LOGIN_SECONDS
    finally:
        registry.process.stop()


class WrongPasswords:
    """Eight wrong passwords a second for one token name, from the attacker's address, in a thread."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self.statuses: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.125):  # the attack's pace, not a wait for a condition
            reply = request(f"{self.url}/v2/", headers=basic(self.name, "wrong-guess"), source=ATTACKER, timeout=10)
            self.statuses.append(reply.status)

    def __enter__(self) -> "WrongPasswords":
        self.thread.start()
        wait_until(lambda: 429 in self.statuses, timeout=20, what="the attacker to be throttled")
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=20)
        figures["attack: wrong passwords for a holder's token name tried"] += len(self.statuses)


def test_wrong_passwords_from_another_address_never_refuse_the_holders_right_password(registry):
    with WrongPasswords(registry.url, "reader1") as attack:
        # A first (not cached) check, then cached ones, for three seconds of the attack.
        statuses = []
        until = len(attack.statuses) + 24
        while len(attack.statuses) < until:
            statuses.append(request(f"{registry.url}/v2/", headers=basic("reader1", PASSWORDS["reader1"])).status)
        token = request(f"{registry.url}/acr/oauth2/token?service=factory-root&scope=repository:factory/app:pull",
                        headers=basic("reader1", PASSWORDS["reader1"]))
        assert set(statuses) == {200} and token.status == 200, statuses
        assert request(f"{registry.url}/v2/", headers=basic("reader1", "wrong-guess"), source=ATTACKER).status == 429
    figures["attack: wrong passwords for a holder's token name held"] += len(attack.statuses)


def test_a_childs_event_feed_keeps_going_while_its_sync_token_name_is_attacked(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("line1-child", "ReadOnly")])
    child = None
    try:
        child = start_instance(tmp_path, "line1-child", parent=root, repositories=["factory/*"],
                               extra={"onDemand": False})
        writer, reader = basic(*WRITER), basic(*READER)
        sync_name, _, _ = sync_token_for("line1-child")

        def push(repository: str) -> str:
            config, layer = b'{"os":"linux"}', os.urandom(2048)
            for blob in (config, layer):
                assert request(f"{root.url}/v2/{repository}/blobs/uploads/?digest={sha256(blob)}", "POST", blob,
                               writer).status == 201
            manifest = image_manifest(config, [layer])
            assert request(f"{root.url}/v2/{repository}/manifests/v1", "PUT", manifest,
                           {**writer, "Content-Type": "application/vnd.oci.image.manifest.v1+json"}).status == 201
            return sha256(manifest)

        def arrived(repository: str, digest: str) -> bool:
            reply = request(f"{child.url}/v2/{repository}/manifests/v1", "HEAD", headers=reader)
            return reply.status == 200 and reply.headers["Docker-Content-Digest"] == digest

        digest = push("factory/before")
        wait_until(lambda: arrived("factory/before", digest), timeout=30, what="the first image at the child")
        with WrongPasswords(root.url, sync_name) as attack:
            for number in range(3):
                repository = f"factory/during-{number}"
                digest = push(repository)
                wait_until(lambda: arrived(repository, digest), timeout=10,
                           what=f"{repository} at the child while its sync token's name is attacked")
            assert 429 in attack.statuses
        figures["attack: wrong passwords for a holder's token name held"] += len(attack.statuses)
    finally:
        if child is not None:
            child.stop()
        root.stop()
