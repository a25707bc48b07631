"""Parent to child over the event feed, with real instances and the real skopeo (SPEC 6, 7.2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.http import basic, request
from tests.support.layouts import make_image, read_blob
from tests.support.oci import sha256
from tests.support.processes import wait_until
from tests.sync.hierarchy import BOTH_TOP_TIERS, READER, WRITER, start_instance
from tests.sync.instance_api import (assert_index_with_signature_arrives, manifest_at, push_index_with_signature,
                                     skopeo_push, status_of)

pytestmark = BOTH_TOP_TIERS  # the parent's side on the embedded stores and as a scale-out replica


@pytest.fixture
def root_and_leaf(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")])
    # onDemand off: what reaches the leaf came by sync, not by a pull-through on the test's first GET
    leaf = start_instance(tmp_path, "line1-leaf", parent=root, repositories=["factory/*"], extra={"onDemand": False})
    try:
        yield root, leaf
    finally:
        leaf.stop()
        root.stop()


def test_a_push_at_the_root_reaches_a_readonly_child(root_and_leaf, tmp_path: Path):
    root, leaf = root_and_leaf
    layout = tmp_path / "layout"
    digest = make_image(layout, "v1", layers=2, size="128K")
    skopeo_push(layout, "v1", root, "factory/app:v1")

    arrived = wait_until(lambda: manifest_at(leaf, "factory/app", "v1"), timeout=30, what="the image at the leaf")
    assert arrived.headers["Docker-Content-Digest"] == digest
    assert arrived.body == read_blob(layout, digest)
    for layer in json.loads(arrived.body)["layers"]:
        blob = request(f"{leaf.url}/v2/factory/app/blobs/{layer['digest']}", headers=basic(*READER))
        assert blob.status == 200 and sha256(blob.body) == layer["digest"]

    status = status_of(leaf)
    assert status["activation"]["status"] == "Active" and status["connectionState"] in ("Online", "Syncing")
    assert status["parent"]["kind"] == "connected"


def test_out_of_scope_repositories_do_not_sync_and_the_leaf_refuses_pushes(root_and_leaf, tmp_path: Path):
    root, leaf = root_and_leaf
    layout = tmp_path / "layout"
    make_image(layout, "v1")
    skopeo_push(layout, "v1", root, "other/app:v1")
    skopeo_push(layout, "v1", root, "factory/marker:v1")
    wait_until(lambda: manifest_at(leaf, "factory/marker", "v1"), timeout=30, what="the in-scope image")
    assert manifest_at(leaf, "other/app", "v1") is None
    refused = request(f"{leaf.url}/v2/factory/app/blobs/uploads/", "POST", headers=basic(*WRITER))
    assert refused.status == 403 and refused.error_message == "This operation is not allowed on this registry."


def test_a_multiplatform_index_with_a_signature_arrives_whole(root_and_leaf, tmp_path: Path):
    root, leaf = root_and_leaf
    layout = tmp_path / "layout"
    assert_index_with_signature_arrives(leaf, layout, *push_index_with_signature(root, layout))


def test_tag_deletes_follow_and_a_restarted_child_catches_up(root_and_leaf, tmp_path: Path):
    root, leaf = root_and_leaf
    layout = tmp_path / "layout"
    make_image(layout, "a")
    make_image(layout, "b")
    skopeo_push(layout, "a", root, "factory/app:a")
    wait_until(lambda: manifest_at(leaf, "factory/app", "a"), timeout=30, what="tag a at the leaf")
    reply = request(f"{root.url}/v2/factory/app/manifests/a", "DELETE", headers=basic(*WRITER))
    assert reply.status == 202
    wait_until(lambda: manifest_at(leaf, "factory/app", "a") is None, timeout=30, what="tag a deleted at the leaf")

    leaf.process.stop()
    skopeo_push(layout, "b", root, "factory/app:b")
    leaf.process.restart()
    wait_until(lambda: manifest_at(leaf, "factory/app", "b"), timeout=30, what="tag b after the restart")
