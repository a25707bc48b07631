"""root -> middle (ReadWrite) -> leaf (ReadOnly), continuous, with real instances and skopeo (SPEC 5, 7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.azurite import BLOB_STORE_VARIABLE
from tests.support.cluster import cluster_status
from tests.support.http import basic, request
from tests.support.layouts import make_image
from tests.support.postgres import METADATA_DSN_VARIABLE, schema_version
from tests.support.processes import wait_until
from tests.sync.hierarchy import BOTH_TOP_TIERS, READER, WRITER, start_instance
from tests.sync.instance_api import (assert_index_with_signature_arrives, digest_at, manifest_at,
                                     push_index_with_signature, skopeo_push, status_of)

# Clustered, the root (the event feed, activation and the children's reports) and the middle (its sync from the root,
# its outbox, the feed and blobs its leaf syncs from) each run as a scale-out replica on a PostgreSQL database and an
# Azurite container of their own; the leaf stays embedded.
pytestmark = BOTH_TOP_TIERS


@pytest.fixture
def three_layers(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("plant-middle", "ReadWrite")])
    middle = start_instance(tmp_path, "plant-middle", parent=root, mode="ReadWrite", repositories=["factory/*"],
                            children=[("line1-leaf", "ReadOnly")], extra={"onDemand": False}, clustered=True)
    # onDemand off at both: what reaches them came by sync, not by a pull-through on the test's first GET
    leaf = start_instance(tmp_path, "line1-leaf", parent=middle, repositories=["factory/*"], extra={"onDemand": False})
    try:
        yield root, middle, leaf
    finally:
        for instance in (leaf, middle, root):
            instance.stop()


def test_pushes_at_the_root_and_at_the_middle_reach_every_layer(three_layers, tmp_path: Path):
    root, middle, leaf = three_layers
    layout = tmp_path / "layout"
    from_root = make_image(layout, "root")
    from_middle = make_image(layout, "middle")

    skopeo_push(layout, "root", root, "factory/app:root")
    wait_until(lambda: digest_at(leaf, "factory/app", "root") == from_root, timeout=40, what="root's push at the leaf")

    skopeo_push(layout, "middle", middle, "factory/app:middle")
    wait_until(lambda: digest_at(root, "factory/app", "middle") == from_middle, timeout=40,
               what="the middle's push at the root")
    wait_until(lambda: digest_at(leaf, "factory/app", "middle") == from_middle, timeout=40,
               what="the middle's push at the leaf")
    wait_until(lambda: status_of(middle)["sync"]["pendingUploads"] == 0, what="the middle's outbox drained")


def test_the_middle_keeps_taking_pushes_while_the_root_is_away_and_converges(three_layers, tmp_path: Path):
    root, middle, leaf = three_layers
    layout = tmp_path / "layout"
    first, second = make_image(layout, "a"), make_image(layout, "b")
    root.process.stop()

    skopeo_push(layout, "a", middle, "factory/app:t")
    reply = request(f"{middle.url}/v2/factory/app/manifests/t", "DELETE", headers=basic(*WRITER))
    assert reply.status == 202
    skopeo_push(layout, "b", middle, "factory/app:t")
    status = wait_until(lambda: (lambda s: s if s["connectionState"] == "Offline" else None)(status_of(middle)),
                        what="the middle Offline")
    assert status["sync"]["pendingUploads"] == 3

    root.process.restart()
    wait_until(lambda: digest_at(root, "factory/app", "t") == second
               and status_of(middle)["sync"]["pendingUploads"] == 0,
               timeout=60, what="the outbox delivered in commit order")
    assert digest_at(root, "factory/app", first) == first  # the first push arrived too
    assert digest_at(middle, "factory/app", "t") == second
    wait_until(lambda: digest_at(leaf, "factory/app", "t") == second, timeout=40, what="t=B at the leaf")


def test_the_leaf_refuses_pushes_and_the_root_sees_the_tree(three_layers, tmp_path: Path):
    root, middle, leaf = three_layers
    refused = request(f"{leaf.url}/v2/factory/app/blobs/uploads/", "POST", headers=basic(*WRITER))
    assert refused.status == 403
    layout = tmp_path / "layout"
    make_image(layout, "x")
    skopeo_push(layout, "x", root, "factory/app:x")
    wait_until(lambda: digest_at(leaf, "factory/app", "x"), timeout=40, what="the image at the leaf")

    def tree():
        node = request(f"{root.url}/acr/connected/v1/registries", headers=basic(*READER)).json()
        children = node["children"]
        if len(children) != 1 or children[0]["activation"]["status"] != "Active":
            return None
        grandchildren = children[0]["children"]
        if len(grandchildren) != 1 or grandchildren[0]["name"] != "line1-leaf":
            return None
        return node

    node = wait_until(tree, timeout=60, what="both layers in the root's hierarchy view")
    assert node["children"][0]["name"] == "plant-middle"
    assert json.dumps(node).count('"Active"') >= 3


def test_a_multiplatform_index_with_a_signature_arrives_whole_at_the_leaf(three_layers, tmp_path: Path):
    root, middle, leaf = three_layers
    layout = tmp_path / "layout"
    assert_index_with_signature_arrives(leaf, layout, *push_index_with_signature(root, layout))


def blob_files(instance) -> set[str]:
    """The hex digests of the blob files in an instance's data directory (the filesystem store)."""
    return {path.name for path in (instance.process.data_dir / "blobs").glob("*/*/*")}


def test_the_root_and_the_middle_keep_their_state_where_their_tier_says(three_layers, tmp_path: Path, top_tier: str,
                                                                        request: pytest.FixtureRequest):
    """The clustered case is no embedded one under another name: the root's and the middle's blobs are in their
    Azurite containers and not in their data directories, their metadata in their PostgreSQL databases, where
    `cluster status` finds them; a push at the middle went up from its container."""
    root, middle, leaf = three_layers
    layout = tmp_path / "layout"
    make_image(layout, "x")
    make_image(layout, "y")
    skopeo_push(layout, "x", root, "factory/app:x")
    skopeo_push(layout, "y", middle, "factory/app:y")
    wait_until(lambda: digest_at(leaf, "factory/app", "x") and digest_at(root, "factory/app", "y"), timeout=40,
               what="the root's image at the leaf, the middle's at the root")
    blobs = _blobs_of(root, "x") | _blobs_of(middle, "y")
    assert blobs <= blob_files(leaf)  # the leaf, embedded in both cases, got them by sync
    if top_tier == "embedded":
        assert blobs <= blob_files(root) and blobs <= blob_files(middle)
        return
    azurite = request.getfixturevalue("azurite")
    for instance in (root, middle):
        dsn, store = instance.process.env[METADATA_DSN_VARIABLE], instance.process.env[BLOB_STORE_VARIABLE]
        assert not blobs & blob_files(instance)
        assert {f"blobs/sha256/{blob}" for blob in blobs} <= azurite.blob_names(store)
        assert schema_version(dsn) is not None
        [replica] = cluster_status(dsn)["replicas"]
        assert (replica["address"], replica["blobStore"]) == (instance.host, store)


def _blobs_of(instance, tag: str) -> set[str]:
    manifest = json.loads(manifest_at(instance, "factory/app", tag).body)
    return {descriptor["digest"].removeprefix("sha256:") for descriptor in [manifest["config"], *manifest["layers"]]}
