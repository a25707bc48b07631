"""Done-when 4: with the parent unreachable, a miss is the usual 404 within parent.connectTimeout +
parent.firstByteTimeout, naming the parent and the timeouts, and cached content keeps being served (SPEC 8)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from tests.cache.layers import blob_at, cold_leaf_behind_proxy, skopeo_pull
from tests.support.http import basic, request
from tests.support.layouts import make_image, read_blob
from tests.sync.hierarchy import READER
from tests.sync.instance_api import ACCEPT, skopeo_push

TIMEOUTS = {"connectTimeout": "PT1S", "firstByteTimeout": "PT2S"}


def manifest_reply(instance, repository: str, reference: str):
    return request(f"{instance.url}/v2/{repository}/manifests/{reference}", headers={**basic(*READER), **ACCEPT})


async def test_a_miss_fails_within_the_timeouts_and_cached_content_is_still_served(tmp_path: Path):
    async with cold_leaf_behind_proxy(tmp_path, TIMEOUTS) as (root, proxy, leaf):
        layout = tmp_path / "layout"
        cached, missing = make_image(layout, "cached", layers=1), make_image(layout, "missing", layers=1)
        skopeo_push(layout, "cached", root, "factory/app:cached")
        skopeo_push(layout, "missing", root, "factory/app:missing")
        await asyncio.to_thread(skopeo_pull, leaf, "factory/app:cached", tmp_path / "first")

        proxy.mode = "hang"  # accepts, never answers
        missing_layer = json.loads(read_blob(layout, missing))["layers"][0]["digest"]
        for path, code in ((f"manifests/missing", "MANIFEST_UNKNOWN"), (f"blobs/{missing_layer}", "BLOB_UNKNOWN")):
            started = time.monotonic()
            reply = await asyncio.to_thread(request, f"{leaf.url}/v2/factory/app/{path}", "GET", None,
                                            {**basic(*READER), **ACCEPT})
            elapsed = time.monotonic() - started
            assert reply.status == 404 and reply.error_code == code, reply.body
            assert proxy.url in reply.error_message and "parent.firstByteTimeout PT2S" in reply.error_message
            assert elapsed < 1 + 2 + 2, f"the miss took {elapsed:.1f}s"

        assert manifest_reply(leaf, "factory/app", "cached").body == read_blob(layout, cached)
        for blob in json.loads(read_blob(layout, cached))["layers"]:
            assert blob_at(leaf, "factory/app", blob["digest"]).body == read_blob(layout, blob["digest"])
        await asyncio.to_thread(skopeo_pull, leaf, "factory/app:cached", tmp_path / "again")

        await proxy.stop()  # now nothing listens at all: refused at once
        started = time.monotonic()
        reply = manifest_reply(leaf, "factory/app", "missing")
        assert reply.status == 404 and reply.error_code == "MANIFEST_UNKNOWN" and proxy.url in reply.error_message
        assert time.monotonic() - started < 3
        assert manifest_reply(leaf, "factory/app", "cached").status == 200
