"""Done-when 5: content that arrived only on demand stays within cache.maxBytes, least recently used out
first; synced content is never evicted (SPEC 8)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.cache.layers import blob_at, cache_status, start_cold_child
from tests.support.http import basic, request
from tests.support.layouts import make_image, read_blob
from tests.support.oci import image_manifest, sha256
from tests.support.processes import wait_until
from tests.sync.hierarchy import OPERATOR, READER, WRITER, start_instance
from tests.sync.instance_api import push_blob, skopeo_push

MiB = 1 << 20


def stored(instance, repository: str, digest: str) -> bool:
    """A HEAD answers from what is stored (it neither starts a transfer nor counts as a use)."""
    return request(f"{instance.url}/v2/{repository}/blobs/{digest}", "HEAD", headers=basic(*READER)).status == 200


def test_least_recently_used_on_demand_blobs_go_first_and_synced_ones_stay(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")])
    leaf = start_cold_child(tmp_path, "line1-leaf", root, extra={"cache": {"maxBytes": 2 * MiB + MiB // 2}})
    try:
        layout = tmp_path / "layout"
        synced = make_image(layout, "synced", layers=1, size="1M")
        skopeo_push(layout, "synced", root, "factory/app:synced")
        synced_blobs = [d["digest"] for d in [json.loads(read_blob(layout, synced))["config"],
                                              *json.loads(read_blob(layout, synced))["layers"]]]
        reply = request(f"{leaf.url}/acr/connected/v1/sync", "POST", headers=basic(*OPERATOR))
        assert reply.status == 202, reply.body
        wait_until(lambda: all(stored(leaf, "factory/app", digest) for digest in synced_blobs), timeout=40,
                   what="the image synced by sync-now")

        contents = [os.urandom(MiB) for _ in range(3)]
        b, c, d = (push_blob(root, "factory/blobs", data) for data in contents)
        for digest in (b, c, b, d):  # b is used again after c: c is the least recently used
            reply = blob_at(leaf, "factory/blobs", digest)
            assert reply.status == 200 and sha256(reply.body) == digest

        status = wait_until(lambda: (lambda s: s if s["evictions"] else None)(cache_status(leaf)),
                            what="an eviction (it runs once the blob that overflowed is stored)")
        assert status["evictions"] == 1 and status["onDemandBytes"] == 2 * MiB, status
        assert [stored(leaf, "factory/blobs", digest) for digest in (b, c, d)] == [True, False, True]
        assert all(stored(leaf, "factory/app", digest) for digest in synced_blobs)  # older, but synced

        assert sha256(blob_at(leaf, "factory/blobs", c).body) == c  # filled again on the next pull
        wait_until(lambda: not stored(leaf, "factory/blobs", b), what="b evicted: now the oldest")

        # d (on demand so far) becomes part of an image that a sync brings: permanent from then on
        config = b'{"architecture": "amd64", "os": "linux"}'
        push_blob(root, "factory/blobs", config)
        body = image_manifest(config, [contents[2]])
        reply = request(f"{root.url}/v2/factory/blobs/manifests/pinned", "PUT", body,
                        {**basic(*WRITER), "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert reply.status == 201, reply.body
        assert request(f"{leaf.url}/acr/connected/v1/sync", "POST", headers=basic(*OPERATOR)).status == 202
        wait_until(lambda: "pinned" in (request(f"{leaf.url}/v2/factory/blobs/tags/list", headers=basic(*READER))
                                        .json().get("tags") or []), timeout=40, what="the image synced by sync-now")
        for _ in range(3):
            reply = blob_at(leaf, "factory/blobs", push_blob(root, "factory/blobs", os.urandom(MiB)))
            assert reply.status == 200
        wait_until(lambda: cache_status(leaf)["evictions"] == 4, what="c, then the first new blob, evicted")
        assert stored(leaf, "factory/blobs", d) and not stored(leaf, "factory/blobs", c)
    finally:
        leaf.stop()
        root.stop()
