"""A second way to the parent (issue 16, parent.alternateEndpoints), with in-process instances: the root is reached
at its own port and through a relay (tests/support/relay.py) on another, the same registry at two addresses. With
the first endpoint down (refused, and separately a listener that accepts and never answers) a child syncs and fills
through the alternate within connectTimeout and a second, reports the switch, keeps its activation and cursor, and
goes back to the first endpoint once it answers again and failbackInterval has passed. Transfers the switch cuts go
on at the alternate from their offset, and a token realm at the failed endpoint is asked at the one in use."""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

import aiohttp
import pytest

from tests.cache.layers import NO_SYNC_DURING_THE_TEST
from tests.support.oci import sha256
from tests.support.relay import TcpRelay
from tests.sync.hierarchy import READER, WRITER
from tests.sync.inprocess import (FakeClock, basic_header, digest_at, eventually, forward, push_small_image,
                                  reported_properties, serve_on_free_port, start_root_for_leaf, start_runtime, url)

MiB = 1 << 20
CONNECT_TIMEOUT = 1.0


async def _async(value):
    return value


@contextlib.asynccontextmanager
async def _behind_two_relays(tmp_path: Path, monkeypatch, mode: str = "ReadOnly"):
    """A root reached through two relays, the first as `endpoint` and the second as its alternate, and a leaf of it:
    (root, leaf, first relay, alternate relay), all stopped afterwards."""
    clock = FakeClock()
    root, document = await start_root_for_leaf(tmp_path, clock, monkeypatch, mode=mode)
    first, alternate = await TcpRelay(root.port).start(), await TcpRelay(root.port).start()
    document["parent"].update(endpoint=first.url, alternateEndpoints=[alternate.url], connectTimeout="PT1S")
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    try:
        yield root, leaf, first, alternate
    finally:
        await leaf.stop()
        await root.stop()
        await first.close()
        await alternate.close()


def codes(runtime) -> set[str]:
    return {detail["code"] for detail in runtime.status_document()["statusDetails"]}


def parent_view(runtime) -> dict:
    return runtime.status_document()["parent"]


async def leaf_with_two_endpoints(tmp_path: Path, monkeypatch, clock, parent: dict | None = None, **leaf):
    """A root, a relay in front of it (the first endpoint), and the desired document of a leaf whose alternate is
    the root's own port, `parent` and `leaf` added to it: (root, relay, leaf document)."""
    root, document = await start_root_for_leaf(tmp_path, clock, monkeypatch)
    first = await TcpRelay(root.port).start()
    document["parent"].update(endpoint=first.url, alternateEndpoints=[f"http://127.0.0.1:{root.port}"],
                              connectTimeout="PT1S", failbackInterval="PT1M", **(parent or {}))
    document.update(leaf)
    return root, first, document


@pytest.mark.parametrize("down", ["refuse", "silent"])
async def test_with_the_first_endpoint_down_the_child_syncs_through_the_alternate_and_goes_back(tmp_path: Path,
                                                                                              monkeypatch, down):
    clock = FakeClock()
    root, first, document = await leaf_with_two_endpoints(tmp_path, monkeypatch, clock)
    alternate = f"http://127.0.0.1:{root.port}"
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    try:
        async with aiohttp.ClientSession() as session:
            async def synced(tag: str, digest: str):
                await eventually(lambda: _arrived(session, leaf, tag, digest, reader), timeout=30, what=f"{tag} synced")

            await synced("v1", await push_small_image(session, root, "factory/app", "v1", writer))
            assert parent_view(leaf)["endpointInUse"] == first.url and parent_view(leaf)["endpoint"] == first.url
            activation, cursor = leaf.status_document()["activation"], leaf.status_document()["sync"]["cursor"]

            went_down = time.monotonic()
            await first.set(down)
            await synced("v2", await push_small_image(session, root, "factory/app", "v2", writer))
            took = time.monotonic() - went_down
            assert took < CONNECT_TIMEOUT + 1, f"{took:.1f} s through the alternate after the first went {down}"
            view = parent_view(leaf)
            assert view["endpointInUse"] == alternate
            switch = view["lastEndpointSwitch"]
            assert (switch["from"], switch["to"]) == (first.url, alternate) and first.url in switch["reason"]
            assert "PARENT_ENDPOINT_ALTERNATE" in codes(leaf)
            await eventually(lambda: _async((reported_properties(tmp_path / "leaf").get("parent") or {}).get(
                "lastEndpointSwitch") == switch), timeout=10, what="the switch in the reported properties")
            assert leaf.status_document()["activation"] == activation  # carried over: not activated again
            await eventually(lambda: _async(leaf.status_document()["sync"]["cursor"] > cursor), timeout=10,
                             what="the feed's cursor to go on from where it was")
            assert "CURSOR_EXPIRED" not in codes(leaf)

            await first.set("forward")  # back, but the alternate stays in use until failbackInterval has passed
            carried = first.bytes_up
            await synced("v3", await push_small_image(session, root, "factory/app", "v3", writer))
            assert parent_view(leaf)["endpointInUse"] == alternate and first.bytes_up == carried
            clock.advance(61)
            await push_small_image(session, root, "factory/app", "v4", writer)
            await eventually(lambda: _async(parent_view(leaf)["endpointInUse"] == first.url), timeout=30,
                             what="the first endpoint in use again")
            assert "answers again" in parent_view(leaf)["lastEndpointSwitch"]["reason"]
            assert "PARENT_ENDPOINT_ALTERNATE" not in codes(leaf)
            carried = first.bytes_up
            await synced("v5", await push_small_image(session, root, "factory/app", "v5", writer))
            assert first.bytes_up > carried, "v5 did not come through the first endpoint"
    finally:
        await leaf.stop()
        await root.stop()
        await first.close()


async def _arrived(session, leaf, tag: str, digest: str, headers: dict) -> bool:
    return await digest_at(session, leaf, "factory/app", tag, headers) == digest


@pytest.mark.parametrize("down", ["refuse", "silent"])
async def test_with_the_first_endpoint_down_a_device_pull_fills_through_the_alternate(tmp_path: Path, monkeypatch,
                                                                                      down):
    clock = FakeClock()
    root, first, document = await leaf_with_two_endpoints(tmp_path, monkeypatch, clock, onDemand=True,
                                                          parent=NO_SYNC_DURING_THE_TEST)
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    try:
        async with aiohttp.ClientSession() as session:
            one = await push_small_image(session, root, "factory/app", "one", writer, layer=os.urandom(MiB))
            assert await digest_at(session, leaf, "factory/app", "one", reader) == one  # filled through the first
            assert parent_view(leaf)["endpointInUse"] == first.url
            layer = os.urandom(2 * MiB)
            two = await push_small_image(session, root, "factory/app", "two", writer, layer=layer)
            await first.set(down)
            started = time.monotonic()
            assert await digest_at(session, leaf, "factory/app", "two", reader) == two
            async with session.get(url(leaf, f"/v2/factory/app/blobs/{sha256(layer)}"), headers=reader) as response:
                assert response.status == 200 and await response.read() == layer
            took = time.monotonic() - started
            assert took < CONNECT_TIMEOUT + 1, f"{took:.1f} s through the alternate after the first went {down}"
            assert parent_view(leaf)["endpointInUse"] == f"http://127.0.0.1:{root.port}"
    finally:
        await leaf.stop()
        await root.stop()
        await first.close()


async def test_an_upload_the_first_endpoint_cuts_goes_on_at_the_alternate_from_its_offset(tmp_path: Path,
                                                                                          monkeypatch):
    """The session the parent opened through the first endpoint is the same parent's at the alternate: the upload
    goes on there from the bytes the parent holds, at the URL it gave, moved to the alternate."""
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    layer = os.urandom(24 * MiB)
    async with _behind_two_relays(tmp_path, monkeypatch, mode="ReadWrite") as (root, leaf, first, alternate):
        async with aiohttp.ClientSession() as session:
            await eventually(lambda: _async(leaf.status_document()["connectionState"] == "Online"), timeout=30,
                             what="the leaf Online")
            first.cut_after(8 * MiB, upstream=True)
            pushed = await push_small_image(session, leaf, "factory/up", "big", writer, layer=layer)
            await eventually(lambda: _async(not leaf.store.outbox()), timeout=60, what="the outbox delivered")
            assert await digest_at(session, root, "factory/up", "big", reader) == pushed
            async with session.get(url(root, f"/v2/factory/up/blobs/{sha256(layer)}"), headers=reader) as response:
                assert await response.read() == layer
        assert first.mode == "refuse" and parent_view(leaf)["endpointInUse"] == alternate.url
        resumed = re.search(rb"Content-Range: (\d+)-", bytes(alternate.requests))
        assert resumed and 0 < int(resumed.group(1)) <= 8 * MiB, "the upload did not go on from its offset"
        assert alternate.bytes_up < len(layer) - 4 * MiB, f"{alternate.bytes_up} bytes sent again"


async def test_a_download_the_first_endpoint_cuts_resumes_at_the_alternate_with_range(tmp_path: Path, monkeypatch):
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    layer = os.urandom(8 * MiB)
    async with _behind_two_relays(tmp_path, monkeypatch) as (root, leaf, first, alternate):
        async with aiohttp.ClientSession() as session:
            await eventually(lambda: _async(leaf.status_document()["connectionState"] == "Online"), timeout=30,
                             what="the leaf Online")
            first.cut_after(3 * MiB, upstream=False)
            pushed = await push_small_image(session, root, "factory/app", "big", writer, layer=layer)
            await eventually(lambda: _arrived(session, leaf, "big", pushed, reader), timeout=60, what="the image")
            async with session.get(url(leaf, f"/v2/factory/app/blobs/{sha256(layer)}"), headers=reader) as response:
                assert await response.read() == layer
        assert first.mode == "refuse" and parent_view(leaf)["endpointInUse"] == alternate.url
        resumed = re.search(rb"Range: bytes=(\d+)-", bytes(alternate.requests))
        assert resumed and 0 < int(resumed.group(1)) <= 3 * MiB, "the download did not resume from its offset"


async def test_a_replica_whose_challenges_name_the_first_endpoint_gives_tokens_while_that_one_is_down(tmp_path: Path,
                                                                                                    monkeypatch):
    """The alternate passes the first endpoint's host name on (a replica behind a load balancer that keeps the
    registry's one name): its token realm and upload locations name the first endpoint, which refuses."""
    clock = FakeClock()
    root, document = await start_root_for_leaf(tmp_path, clock, monkeypatch, mode="ReadWrite")
    first = await TcpRelay(root.port, mode="refuse").start()
    paths: list[str] = []

    async def as_the_first(request):
        paths.append(request.path)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        headers["Host"] = f"127.0.0.1:{first.port}"
        return await forward(request, f"http://127.0.0.1:{root.port}{request.path_qs}", headers=headers)

    runner, port = await serve_on_free_port(as_the_first)
    document["parent"].update(endpoint=first.url, alternateEndpoints=[f"http://127.0.0.1:{port}"],
                              connectTimeout="PT1S")
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    try:
        async with aiohttp.ClientSession() as session:
            down = await push_small_image(session, root, "factory/app", "v1", writer)
            await eventually(lambda: _arrived(session, leaf, "v1", down, reader), timeout=30, what="v1 synced")
            up = await push_small_image(session, leaf, "factory/up", "v1", writer)
            await eventually(lambda: _async(not leaf.store.outbox()), timeout=30, what="the outbox delivered")
            assert await digest_at(session, root, "factory/up", "v1", reader) == up
        assert "/acr/oauth2/token" in paths and any("/blobs/uploads/" in path for path in paths)
    finally:
        await leaf.stop()
        await root.stop()
        await first.close()
        await runner.cleanup()
