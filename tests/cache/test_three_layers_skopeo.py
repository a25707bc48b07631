"""Done-when 1: a pull at the bottom of three layers fills every layer on the way (SPEC 8)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cache.layers import blob_at, cache_status, skopeo_pull, start_cold_child
from tests.support.http import basic, request
from tests.support.layouts import read_blob
from tests.support.oci import sha256
from tests.sync.hierarchy import READER, start_instance
from tests.sync.instance_api import manifest_at, push_index_with_signature


def referrers_at(instance, repository: str, digest: str) -> list[str]:
    reply = request(f"{instance.url}/v2/{repository}/referrers/{digest}", headers=basic(*READER))
    assert reply.status == 200, reply.body
    return [descriptor["digest"] for descriptor in reply.json()["manifests"]]


def test_skopeo_pulls_through_two_cold_layers_and_the_middle_keeps_it(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("plant-middle", "ReadOnly")])
    middle = start_cold_child(tmp_path, "plant-middle", root, children=[("line1-leaf", "ReadOnly")])
    leaf = start_cold_child(tmp_path, "line1-leaf", middle)
    try:
        layout = tmp_path / "layout"
        index_digest, index_body, signature_digest = push_index_with_signature(root, layout)

        pulled = tmp_path / "pulled"
        skopeo_pull(leaf, "factory/multi:1.0", pulled, "--all", "--preserve-digests")
        copied = json.loads((pulled / "index.json").read_text())["manifests"][0]
        assert copied["digest"] == index_digest  # skopeo checked every digest on the way
        for child in json.loads(index_body)["manifests"]:
            child_body = read_blob(layout, child["digest"])
            assert read_blob(pulled, child["digest"]) == child_body
            for blob in [json.loads(child_body)["config"], *json.loads(child_body)["layers"]]:
                assert sha256(read_blob(pulled, blob["digest"])) == blob["digest"]
        assert signature_digest in referrers_at(leaf, "factory/multi", index_digest)

        leaf_cache = cache_status(leaf)
        assert leaf_cache["lastSyncTime"] is None, "the leaf was not supposed to sync"
        assert leaf_cache["misses"] > 0 and leaf_cache["bytesFetchedOnDemand"] > 0

        root.stop()
        assert manifest_at(middle, "factory/multi", "1.0").body == index_body
        for child in json.loads(index_body)["manifests"]:
            child_body = read_blob(layout, child["digest"])
            assert manifest_at(middle, "factory/multi", child["digest"]).body == child_body
            for blob in [json.loads(child_body)["config"], *json.loads(child_body)["layers"]]:
                reply = blob_at(middle, "factory/multi", blob["digest"])
                assert reply.status == 200 and sha256(reply.body) == blob["digest"]
        # brought along with the index (the root is stopped: nothing to merge from)
        assert referrers_at(middle, "factory/multi", index_digest) == [signature_digest]
        assert cache_status(middle)["lastSyncTime"] is None
    finally:
        for instance in (leaf, middle, root):
            instance.stop()
