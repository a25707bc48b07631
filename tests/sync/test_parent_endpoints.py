"""The endpoint choice of the parent client (issue 16: parent.alternateEndpoints) against real listeners: a port that
refuses, a listener that accepts and never answers, one whose certificate is not trusted, one that answers 503, and
a small parent answering on a second address. The choice sticks until the endpoint in use fails, and the first
endpoint is asked again after failbackInterval; with one endpoint nothing changes (no probes)."""

from __future__ import annotations

import asyncio
import json
import ssl
import time

import pytest
from aiohttp import web

from connected_registry.sync.parent_client import ParentClient, ParentUnreachable
from tests.support.pki import TestPki
from tests.support.relay import TcpRelay
from tests.sync.inprocess import FakeClock, serve_on_free_port

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}).encode()


class SmallParent:
    """Answers `/v2/`, one manifest and a token; `status` makes it answer everything else with that status.
    `realm` names the token service its challenges send clients to (default: its own)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.status: int | None = None
        self.realm: str | None = None
        self.runner, self.port = None, 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "SmallParent":
        self.runner, self.port = await serve_on_free_port(self._handle)
        return self

    async def _handle(self, request: web.Request) -> web.Response:
        self.seen.append(f"{request.method} {request.path}")
        if request.path == "/v2/":
            return web.Response(status=200)
        if request.path == "/token":
            return web.json_response({"token": "t-1", "expires_in": 300})
        if self.status is not None:
            return web.Response(status=self.status)
        if self.realm is not None and request.headers.get("Authorization") != "Bearer t-1":
            return web.Response(status=401, headers={"WWW-Authenticate": f'Bearer realm="{self.realm}",service="p"'})
        return web.Response(body=MANIFEST, content_type="application/vnd.oci.image.manifest.v1+json")

    async def close(self) -> None:
        await self.runner.cleanup()


def client_for(*endpoints: str, clock=time.time, **timeouts) -> ParentClient:
    options = {"connect_timeout": 1.0, "first_byte_timeout": 30.0, **timeouts}
    return ParentClient(endpoints[0], "sync", "password", alternates=list(endpoints[1:]), failback_after=60,
                        clock=clock, **options)


@pytest.fixture
async def parent():
    small = await SmallParent().start()
    yield small
    await small.close()


async def test_a_refused_first_endpoint_switches_to_the_next_which_sticks_until_the_failback(parent):
    first, clock = await TcpRelay(parent.port, mode="refuse").start(), FakeClock()
    client = client_for(first.url, parent.url, clock=clock)
    switches = []
    client.endpoints.on_switch = switches.append
    try:
        assert (await client.get_manifest("factory/app", "v1")).body == MANIFEST
        assert client.endpoint == parent.url and [s.target for s in switches] == [parent.url]
        assert switches[0].source == first.url and "unreachable" in switches[0].reason
        await first.set("forward")  # the first endpoint is back: the alternate stays in use until the failback
        await client.get_manifest("factory/app", "v1")
        assert client.endpoint == parent.url and first.bytes_up == 0
        clock.advance(61)
        await client.get_manifest("factory/app", "v1")  # starts the failback beside the request
        for _ in range(100):
            if client.endpoint == first.url:
                break
            await asyncio.sleep(0.02)
        assert client.endpoint == first.url and "answers again" in switches[-1].reason
        before = first.bytes_up
        await client.get_manifest("factory/app", "v1")
        assert first.bytes_up > before
        assert client.endpoints.document()["lastEndpointSwitch"]["to"] == first.url
    finally:
        await client.close()
        await first.close()


@pytest.mark.parametrize("down", ["refuse", "silent"])
async def test_with_the_first_endpoint_down_a_request_is_answered_within_the_connect_timeout_and_a_second(
        parent, down):
    first = await TcpRelay(parent.port, mode=down).start()
    client = client_for(first.url, parent.url)
    try:
        started = time.monotonic()
        assert (await client.get_manifest("factory/app", "v1")).body == MANIFEST
        assert time.monotonic() - started < client.connect_timeout + 1
        assert client.endpoint == parent.url
        if down == "silent":
            assert "connectTimeout" in client.endpoints.last_switch.reason
    finally:
        await client.close()
        await first.close()


async def test_a_first_endpoint_that_goes_silent_while_in_use_is_left_within_the_connect_timeout_and_a_second(
        parent):
    """A request to the endpoint just heard from is sent without a probe; once it has waited half a second, the
    endpoint is probed, and when that goes unanswered too the request moves on (long before its first-byte timeout)."""
    first = await TcpRelay(parent.port).start()
    client = client_for(first.url, parent.url)
    try:
        await client.get_manifest("factory/app", "v1")
        assert client.endpoint == first.url
        await first.set("silent")
        started = time.monotonic()
        assert (await client.get_manifest("factory/app", "v1")).body == MANIFEST
        assert time.monotonic() - started < client.connect_timeout + 1
        assert client.endpoint == parent.url and "connectTimeout" in client.endpoints.last_switch.reason
    finally:
        await client.close()
        await first.close()


async def test_an_endpoint_answering_503_is_left_a_get_goes_on_and_a_put_fails_once(parent):
    sick = await SmallParent().start()
    sick.status = 503
    client = client_for(sick.url, parent.url)
    try:
        assert (await client.get_manifest("factory/app", "v1")).body == MANIFEST  # a GET may be sent twice
        assert client.endpoint == parent.url and "503" in client.endpoints.last_switch.reason
        client.endpoints.failed(parent.url, "test: back to the first")
        with pytest.raises(ParentUnreachable):  # a PUT is not sent twice: it fails, and the next request goes on
            await client.put_manifest("factory/app", "v2", MANIFEST, "application/vnd.oci.image.manifest.v1+json")
        assert client.endpoint == parent.url
        assert sick.seen.count("PUT /v2/factory/app/manifests/v2") == 1
        assert "PUT /v2/factory/app/manifests/v2" not in parent.seen
    finally:
        await client.close()
        await sick.close()


async def test_a_first_endpoint_with_an_untrusted_certificate_is_left_and_the_trust_bundle_is_read_again(
        parent, test_pki: TestPki):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(test_pki.server_chain, test_pki.server_key)
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=MANIFEST)

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    client = client_for(f"https://127.0.0.1:{port}", parent.url)
    refreshed = []
    client.on_certificate_error = lambda: refreshed.append(True)
    try:
        assert (await client.get_manifest("factory/app", "v1")).body == MANIFEST
        assert client.endpoint == parent.url and refreshed
        assert "certificate" in client.endpoints.last_switch.reason
    finally:
        await client.close()
        await runner.cleanup()


async def test_a_token_realm_at_the_failed_endpoint_is_asked_at_the_endpoint_in_use(parent):
    first = await TcpRelay(parent.port, mode="refuse").start()
    parent.realm = f"{first.url}/token"  # a replica that names the first endpoint in its challenge
    client = client_for(first.url, parent.url)
    try:
        assert (await client.get_manifest("factory/app", "v1")).body == MANIFEST
        assert "GET /token" in parent.seen
    finally:
        await client.close()
        await first.close()


async def test_with_one_endpoint_requests_go_straight_to_it_without_probes():
    only = await SmallParent().start()
    client = client_for(only.url)
    try:
        await client.get_manifest("factory/app", "v1")
        assert only.seen == ["GET /v2/factory/app/manifests/v1"]
    finally:
        await only.close()
    try:
        with pytest.raises(ParentUnreachable):
            await client.get_manifest("factory/app", "v1")
        assert client.endpoint == only.url and client.endpoints.last_switch is None
    finally:
        await client.close()


def test_an_upload_location_or_a_next_page_at_any_endpoint_is_used_at_the_one_in_use():
    client = client_for("https://a.example:8000", "https://b.example")
    endpoints = client.endpoints
    endpoints.current = "https://b.example"
    assert (endpoints.url("https://a.example:8000/v2/r/blobs/uploads/1?_state=x")
            == "https://b.example/v2/r/blobs/uploads/1?_state=x")
    assert endpoints.url("https://B.example:443/v2/_catalog?n=10") == "https://b.example/v2/_catalog?n=10"
    assert endpoints.url("https://storage.example/blob?sig=1") == "https://storage.example/blob?sig=1"
    assert endpoints.url("/v2/") == "https://b.example/v2/"
