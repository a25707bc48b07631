"""Indexes that name the same content many times, nested or wide, cost the parent one request per distinct
manifest and blob, in both directions; an entry over its budget is parked, and no repository's entries hold up
another's (issue 14, finding 2)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp

from connected_registry.sync.budget import MAX_REQUESTS
from tests.support.clients import RecordingProxy
from tests.support.http import basic, request
from tests.support.oci import image_manifest, index_of, sha256
from tests.support.processes import wait_until
from tests.sync.hierarchy import BOTH_TOP_TIERS, WRITER, start_instance
from tests.sync.instance_api import (PROMPTLY, digest_at, outbox, push_small_image, push_the_one_image, put_manifest,
                                     status_of)

pytestmark = BOTH_TOP_TIERS  # the parent's side on the embedded stores and as a scale-out replica


def push_nested_index(instance, repository: str, tag: str, fan_out: int, levels: int) -> tuple[str, str]:
    """An index of `fan_out` identical indexes of ... of `fan_out` identical image manifests (`levels` indexes
    deep): (the image manifest's digest, the top index's digest)."""
    body = push_the_one_image(instance, repository)
    image = sha256(body)
    for level in range(levels):
        body = index_of(body, fan_out)
        put_manifest(instance, repository, tag if level == levels - 1 else sha256(body), body)
    return image, sha256(body)


class HoldingProxy(RecordingProxy):
    """A RecordingProxy that holds every request for one repository until `release()`: an entry going up that
    takes as long as the test wants (a big layer on a slow link)."""

    name = "holding proxy"

    def __init__(self, upstream: str, held_repository: str) -> None:
        self.held = f"/v2/{held_repository}/"
        self.holding = 0  # requests held now
        super().__init__(upstream)

    async def make_app(self):
        self._released = asyncio.Event()
        return await super().make_app()

    async def _forward(self, request):
        if request.path.startswith(self.held):
            self.holding += 1
            await self._released.wait()
            self.holding -= 1
        return await super()._forward(request)

    def release(self) -> None:
        self._loop.call_soon_threadsafe(self._released.set)

    async def close(self) -> None:
        self._released.set()
        await super().close()


def test_a_nested_index_goes_up_with_a_request_per_distinct_manifest_and_holds_up_nothing(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("plant-middle", "ReadWrite")])
    proxy = RecordingProxy(root.host, timeout=30)  # counts what the parent is asked
    middle = start_instance(tmp_path, "plant-middle", parent=proxy, mode="ReadWrite", repositories=["factory/*"])
    try:
        # 10 x 10 x 10 = 1,000 references to one image manifest, in three manifests of 1.6 KB or so
        image, top = push_nested_index(middle, "factory/nested", "v1", fan_out=10, levels=3)
        pushed = time.monotonic()
        unrelated = push_small_image(middle, "factory/app", "v1")
        wait_until(lambda: digest_at(root, "factory/app", "v1") == unrelated, timeout=60, what="the unrelated push")
        took = time.monotonic() - pushed
        wait_until(lambda: digest_at(root, "factory/nested", "v1") == top, timeout=60, what="the nested index")
        for reference in ("v1", image):
            assert digest_at(root, "factory/nested", reference) is not None

        # four outbox entries (the image, two inner indexes, the tagged top): each sends a distinct manifest once
        sent = proxy.requests_for("factory/nested")
        assert len(sent) < 100, f"{len(sent)} requests at the parent for 4 manifests of 3 distinct blobs and manifests"
        image_puts = [e for e in proxy.requests_for("factory/nested", "PUT", "manifests/") if e.path.endswith(image)]
        assert len([e for e in image_puts if e.status == 201]) <= 4, image_puts
        assert took < PROMPTLY, f"a push of another repository took {took:.1f}s to reach the parent"
    finally:
        middle.stop()
        proxy.stop()
        root.stop()


def test_a_repository_whose_entry_takes_long_holds_up_no_other_repository(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("plant-middle", "ReadWrite")])
    proxy = HoldingProxy(root.host, "factory/slow")
    middle = start_instance(tmp_path, "plant-middle", parent=proxy, mode="ReadWrite", repositories=["factory/*"],
                            parent_settings={"firstByteTimeout": "PT3M"})  # the held requests wait, they do not fail
    try:
        slow = push_small_image(middle, "factory/slow", "v1")
        wait_until(lambda: proxy.holding, timeout=30, what="the slow entry to start going up")
        for tag in ("v1", "v2"):  # entries written while the slow one goes up are taken as they come
            pushed = time.monotonic()
            digest = push_small_image(middle, "factory/app", tag)
            wait_until(lambda: digest_at(root, "factory/app", tag) == digest, timeout=60, what=f"factory/app:{tag}")
            took = time.monotonic() - pushed
            assert took < PROMPTLY, f"factory/app:{tag} took {took:.1f}s to reach the parent behind factory/slow"
        assert digest_at(root, "factory/slow", "v1") is None

        proxy.release()
        wait_until(lambda: digest_at(root, "factory/slow", "v1") == slow, timeout=60, what="the slow entry at last")
    finally:
        middle.stop()
        proxy.stop()
        root.stop()


async def _push_blobs(instance, repository: str, blobs: list[bytes]) -> None:
    limit = asyncio.Semaphore(8)
    authorization = basic(*WRITER)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        async def one(data: bytes) -> None:
            async with limit:
                async with session.post(f"{instance.url}/v2/{repository}/blobs/uploads/?digest={sha256(data)}",
                                        data=data, headers=authorization) as reply:
                    assert reply.status == 201, await reply.text()

        await asyncio.gather(*(one(blob) for blob in blobs))


def test_an_entry_over_the_request_budget_is_parked_before_anything_is_sent(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("plant-middle", "ReadWrite")])
    proxy = RecordingProxy(root.host, timeout=30)
    middle = start_instance(tmp_path, "plant-middle", parent=proxy, mode="ReadWrite", repositories=["factory/*"])
    try:
        # one image of more distinct layers than one entry may send (each a HEAD at the parent, at least)
        config, layers = b'{"os":"linux"}', [b"layer %d" % number for number in range(MAX_REQUESTS)]
        asyncio.run(_push_blobs(middle, "factory/huge", [config, *layers]))
        put_manifest(middle, "factory/huge", "v1", image_manifest(config, layers))

        def parked():
            document = status_of(middle)
            return next((d for d in document["statusDetails"] if d["code"] == "UPLOAD_BUDGET_EXCEEDED"), None)

        detail = wait_until(parked, timeout=60, what="UPLOAD_BUDGET_EXCEEDED")
        assert detail["severity"] == "Error"
        description = detail["description"]
        assert "factory/huge:v1" in description and f"over the budget of {MAX_REQUESTS}" in description, description
        entries = json.loads(outbox(middle, "list", "--json").stdout)
        assert [(e["repository"], e["state"]) for e in entries] == [("factory/huge", "parked")]
        assert f"outbox drop {entries[0]['id']}" in description
        assert proxy.requests_for("factory/huge") == []  # refused before it sent anything
        assert status_of(middle)["sync"]["rejectedUploads"] == 1

        # other repositories go on; dropping the entry clears the detail
        unrelated = push_small_image(middle, "factory/app", "v1")
        wait_until(lambda: digest_at(root, "factory/app", "v1") == unrelated, timeout=30, what="another repository")
        assert outbox(middle, "drop", str(entries[0]["id"])).returncode == 0
        wait_until(lambda: parked() is None, timeout=30, what="UPLOAD_BUDGET_EXCEEDED cleared")
    finally:
        middle.stop()
        proxy.stop()
        root.stop()


def test_an_index_of_ten_thousand_identical_entries_comes_down_with_one_get_per_distinct_manifest(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")])
    image, top = push_nested_index(root, "factory/wide", "v1", fan_out=10_000, levels=1)
    proxy = RecordingProxy(root.host, timeout=30)
    # onDemand off: only the sync brings content here
    leaf = start_instance(tmp_path, "line1-leaf", parent=proxy, repositories=["factory/*"], extra={"onDemand": False})
    try:
        wait_until(lambda: digest_at(leaf, "factory/wide", "v1") == top, timeout=60, what="the wide index at the leaf")
        assert digest_at(leaf, "factory/wide", image) is not None
        gets = proxy.requests_for("factory/wide", "GET", "manifests/")
        assert len([e for e in gets if e.path.endswith(image)]) <= 2, f"{len(gets)} manifest GETs"
        assert len(gets) <= 10, f"{len(gets)} manifest GETs for 2 distinct manifests"
        referrers = proxy.requests_for("factory/wide", "GET", "referrers/")
        assert len(referrers) <= 10, f"{len(referrers)} referrers GETs for 2 distinct manifests"
    finally:
        leaf.stop()
        proxy.stop()
        root.stop()
