"""Parent to child over the event feed, with real instances and the real skopeo (SPEC 6, 7.2)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.http import basic, request
from tests.support.layouts import make_image, make_multiplatform_index, read_blob
from tests.support.oci import image_manifest, sha256
from tests.support.processes import wait_until
from tests.sync.hierarchy import READER, WRITER, start_instance

ACCEPT = {"Accept": "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"}


def skopeo_push(layout: Path, tag: str, instance, reference: str, *extra: str) -> None:
    result = subprocess.run(["skopeo", "copy", "--preserve-digests", "--dest-tls-verify=false", *extra,
                             "--dest-creds", f"{WRITER[0]}:{WRITER[1]}", f"oci:{layout}:{tag}",
                             f"docker://{instance.host}/{reference}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def manifest_at(instance, repository: str, reference: str):
    reply = request(f"{instance.url}/v2/{repository}/manifests/{reference}", headers={**basic(*READER), **ACCEPT})
    return reply if reply.status == 200 else None


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

    status = request(f"{leaf.url}/acr/connected/v1/status", headers=basic(*READER)).json()
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


def push_index_with_signature(instance, layout: Path) -> tuple[str, bytes, str]:
    """A two-platform index pushed with skopeo --all, and a signature attached to it through subject."""
    index_digest = make_multiplatform_index(layout, "multi")
    skopeo_push(layout, "multi", instance, "factory/multi:1.0", "--all")
    config, payload = b"{}", b"signature-bytes"
    for blob in (config, payload):
        reply = request(f"{instance.url}/v2/factory/multi/blobs/uploads/?digest={sha256(blob)}", "POST", blob,
                        basic(*WRITER))
        assert reply.status == 201
    index_body = read_blob(layout, index_digest)
    signature = json.loads(image_manifest(config, [payload], config_type="application/vnd.oci.empty.v1+json",
                                          artifact_type="application/vnd.example.signature"))
    signature["subject"] = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest,
                            "size": len(index_body)}
    signature_body = json.dumps(signature).encode()
    reply = request(f"{instance.url}/v2/factory/multi/manifests/{sha256(signature_body)}", "PUT", signature_body,
                    {**basic(*WRITER), "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert reply.status == 201
    return index_digest, index_body, sha256(signature_body)


def assert_index_with_signature_arrives(instance, layout: Path, index_digest: str, index_body: bytes,
                                        signature_digest: str) -> None:
    arrived = wait_until(lambda: manifest_at(instance, "factory/multi", "1.0"), timeout=40, what="the index")
    assert arrived.body == index_body
    for child in json.loads(index_body)["manifests"]:
        assert manifest_at(instance, "factory/multi", child["digest"]).body == read_blob(layout, child["digest"])

    def signature_listed():
        reply = request(f"{instance.url}/v2/factory/multi/referrers/{index_digest}", headers=basic(*READER))
        return reply.status == 200 and [m["digest"] for m in reply.json()["manifests"]] == [signature_digest]

    wait_until(signature_listed, timeout=40, what="the signature")


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
