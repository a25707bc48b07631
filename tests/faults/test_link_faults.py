"""A link that comes and goes between two layers (SPEC 7.2, 7.3): the test proxy (tests/sync/inprocess.py's
FaultyLink) sits between a ReadWrite leaf and its root and injects, one at a time, a dropped connection (the
answer to a forwarded write lost), a stalled transfer, a TCP reset mid-transfer, a slow trickle and a refused
connection, while images are pushed at both ends. Under each fault the leaf reports Offline (a trickle only
slows it); once the link is good it reports Online again within seconds (however many faults came before),
the cut transfers resume, the outbox drains, and both images are at both layers, byte for byte.

The same faults hit on-demand pulls (SPEC 8) at a leaf that never syncs during the test: a client gets the
whole, correct image or a clear failure (a 404 naming the parent, or a broken transfer), never wrong bytes
and never a 500; once the link is good the same pull succeeds at once."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp

from tests.cache.layers import NO_SYNC_DURING_THE_TEST
from tests.faults.conftest import figures
from tests.support.oci import sha256
from tests.sync.hierarchy import READER, WRITER
from tests.sync.inprocess import (LINK_FAULTS, FakeClock, FaultyLink, basic_header, digest_at, eventually,
                                  push_small_image, start_root_for_leaf, start_runtime, url)

MiB = 1 << 20
RECOVERY_SECONDS = 15


class StateRecorder:
    """Samples the leaf's reported connectionState, so a short Offline spell is not missed."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.seen: list[str] = []
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            state = self.runtime.status_document()["connectionState"]
            if not self.seen or self.seen[-1] != state:
                self.seen.append(state)
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def _blob_bytes(session, runtime, repository: str, digest: str, headers: dict) -> bytes | None:
    async with session.get(url(runtime, f"/v2/{repository}/blobs/{digest}"), headers=headers) as response:
        return await response.read() if response.status == 200 else None


async def test_every_link_fault_ends_offline_then_online_with_nothing_lost_or_corrupted(tmp_path: Path, monkeypatch,
                                                                                      budget):
    link = await FaultyLink().start()
    clock = FakeClock()
    root, document = await start_root_for_leaf(
        tmp_path, clock, monkeypatch, mode="ReadWrite",
        parent={"endpoint": link.url, "connectTimeout": "PT1S", "firstByteTimeout": "PT1S"})
    link.upstream = f"http://127.0.0.1:{root.port}"
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    states = StateRecorder(leaf)
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    try:
        async with aiohttp.ClientSession() as session:
            await eventually(lambda: _async(leaf.status_document()["connectionState"] == "Online"), timeout=30,
                             what="the leaf Online")
            for round_number in budget(2, 120):
                for fault in LINK_FAULTS:
                    injected = dict(link.injected)
                    await link.set(fault)
                    states.seen = states.seen[-1:]
                    tag = f"{fault}-{round_number}"
                    down_layer, up_layer = os.urandom(3 * MiB), os.urandom(MiB)
                    down = await push_small_image(session, root, "factory/down", tag, writer, layer=down_layer)
                    up = await push_small_image(session, leaf, "factory/up", tag, writer, layer=up_layer)
                    if fault != "trickle":
                        await eventually(lambda: _async("Offline" in states.seen), timeout=30,
                                         what=f"the leaf to report Offline under {fault}")
                    await eventually(lambda: _async(link.injected.get(fault, 0) > injected.get(fault, 0)),
                                     timeout=30, what=f"{fault} to hit a transfer")
                    await link.set(None)
                    back = time.monotonic()

                    async def converged():
                        return (await digest_at(session, leaf, "factory/down", tag, reader) == down
                                and await digest_at(session, root, "factory/up", tag, reader) == up
                                and not leaf.store.outbox()
                                and leaf.status_document()["connectionState"] == "Online")

                    await eventually(converged, timeout=120, what=f"both images at both layers after {fault}")
                    # However many faults came before, a good link is used again within seconds (backoff resets).
                    took = time.monotonic() - back
                    figures["link: slowest recovery once the link was good (s)"] = max(
                        figures["link: slowest recovery once the link was good (s)"], round(took))
                    assert took < RECOVERY_SECONDS, f"{took:.0f} s after {fault}"
                    assert await _blob_bytes(session, leaf, "factory/down", sha256(down_layer), reader) == down_layer
                    assert await _blob_bytes(session, root, "factory/up", sha256(up_layer), reader) == up_layer
                    if fault != "trickle":
                        assert states.seen.index("Offline") < len(states.seen) - 1, states.seen
                    figures[f"link: {fault} rounds survived"] += 1
                    figures["link: images checked at both layers"] += 2
    finally:
        await states.stop()
        await leaf.stop()
        await root.stop()
        await link.close()
    for fault, count in link.injected.items():
        figures[f"link: {fault} faults injected (connections)"] += count


async def test_an_upload_the_link_cuts_again_and_again_goes_on_where_it_stopped(tmp_path: Path, monkeypatch):
    """A ReadWrite leaf pushes a 24 MiB layer up a link that cuts every upload after 8 MiB: each attempt goes on
    from the bytes the parent holds, so the layer gets through though no attempt carries it whole, and every byte
    crosses the link once."""
    link = await FaultyLink(cut_after=8 * MiB).start()
    clock = FakeClock()
    root, document = await start_root_for_leaf(tmp_path, clock, monkeypatch, mode="ReadWrite",
                                               parent={"endpoint": link.url})
    link.upstream = f"http://127.0.0.1:{root.port}"
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    try:
        async with aiohttp.ClientSession() as session:
            await link.set("cut_upload")
            layer = os.urandom(24 * MiB)
            pushed = await push_small_image(session, leaf, "factory/up", "big", writer, layer=layer)
            await eventually(lambda: _async(not leaf.store.outbox()), timeout=120, what="the outbox delivered")
            assert await digest_at(session, root, "factory/up", "big", reader) == pushed
            assert await _blob_bytes(session, root, "factory/up", sha256(layer), reader) == layer
    finally:
        await leaf.stop()
        await root.stop()
        await link.close()
    assert link.injected["cut_upload"] >= 2, link.injected
    assert link.upload_bytes < len(layer) + MiB, f"{link.upload_bytes} bytes carried for a {len(layer)} byte layer"
    figures["link: upload cuts resumed"] += link.injected["cut_upload"]


async def _pull_image(session, runtime, repository: str, tag: str, headers: dict) -> tuple[str, bytes | None]:
    """("whole", layer bytes) or ("failed", None) for one client pull of an image's manifest and its layer;
    anything else (a 500, a body of the right length with the wrong bytes) fails the test."""
    try:
        async with session.get(url(runtime, f"/v2/{repository}/manifests/{tag}"), headers={
                **headers, "Accept": "application/vnd.oci.image.manifest.v1+json"}) as response:
            body = await response.read()
            if response.status != 200:
                assert response.status == 404, (response.status, body[:300])
                assert b"parent" in body, body[:300]  # the message names the parent and what went wrong
                return "failed", None
            assert sha256(body) == response.headers["Docker-Content-Digest"]
        import json
        layer_digest = json.loads(body)["layers"][0]["digest"]
        async with session.get(url(runtime, f"/v2/{repository}/blobs/{layer_digest}"), headers=headers) as response:
            if response.status != 200:
                text = await response.read()
                assert response.status == 404 and b"parent" in text, (response.status, text[:300])
                return "failed", None
            layer = await response.read()
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
        return "failed", None  # a broken transfer: the client knows it did not get the image
    assert sha256(layer) == layer_digest, "a pull through a faulty link got wrong bytes"
    return "whole", layer


async def test_on_demand_pulls_through_every_link_fault_get_whole_images_or_a_clear_failure(tmp_path: Path,
                                                                                           monkeypatch, budget):
    link = await FaultyLink().start()
    clock = FakeClock()
    root, document = await start_root_for_leaf(
        tmp_path, clock, monkeypatch,
        parent={"endpoint": link.url, "connectTimeout": "PT1S", "firstByteTimeout": "PT1S", **NO_SYNC_DURING_THE_TEST})
    document["onDemand"] = True
    link.upstream = f"http://127.0.0.1:{root.port}"
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    writer, reader = basic_header(*WRITER), basic_header(*READER)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            for round_number in budget(1, 60):
                for fault in LINK_FAULTS:
                    tag = f"{fault}-{round_number}"
                    layer = os.urandom(3 * MiB)
                    await push_small_image(session, root, "factory/pulled", tag, writer, layer=layer)
                    injected = link.injected.get(fault, 0)
                    await link.set(fault)
                    outcome, got = await _pull_image(session, leaf, "factory/pulled", tag, reader)
                    figures[f"link: on-demand pulls under {fault}, {outcome}"] += 1
                    if fault != "drop":  # drop loses only the answers to writes: a pull must not notice it
                        assert link.injected.get(fault, 0) > injected, f"{fault} never hit the pull"
                    if fault in ("drop", "trickle"):  # neither loses a byte of a pull: it must arrive whole
                        assert outcome == "whole", fault
                    await link.set(None)
                    back = time.monotonic()
                    outcome, got = await _pull_image(session, leaf, "factory/pulled", tag, reader)
                    assert outcome == "whole" and got == layer, f"the pull after {fault} ended the link's fault"
                    took = time.monotonic() - back
                    assert took < RECOVERY_SECONDS, f"{took:.0f} s after {fault}"
                    figures["link: on-demand images checked after the fault"] += 1
                    # What was kept is the image itself: a second pull is served from the leaf, byte for byte.
                    await link.set("refuse")
                    assert await _pull_image(session, leaf, "factory/pulled", tag, reader) == ("whole", layer)
                    await link.set(None)
    finally:
        await leaf.stop()
        await root.stop()
        await link.close()


async def _async(value):
    return value
