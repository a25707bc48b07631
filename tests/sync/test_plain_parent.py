"""A plain parent: CNCF distribution 2.8 (no activation, no event feed, no referrers API) (SPEC 2, 7)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urljoin

from tests.support.clients import Distribution
from tests.support.http import basic, request
from tests.support.layouts import make_image, read_blob
from tests.support.oci import OCI_INDEX, OCI_MANIFEST, image_manifest, sha256
from tests.support.processes import wait_until
from tests.sync.hierarchy import READER, WRITER, start_instance
from tests.sync.instance_api import codes, manifest_at, skopeo_push, status_of



def push_plain(registry_url: str, repository: str, reference: str, body: bytes, media_type: str, headers=None):
    reply = request(f"{registry_url}/v2/{repository}/manifests/{reference}", "PUT", body,
                    {**(headers or {}), "Content-Type": media_type})
    assert reply.status == 201, reply.body
    return reply


def upload(registry_url: str, repository: str, blob: bytes, headers: dict) -> None:
    """POST then PUT: distribution 2.8 has no single-request (POST ?digest=) upload."""
    started = request(f"{registry_url}/v2/{repository}/blobs/uploads/", "POST", b"", headers)
    assert started.status == 202, started.body
    location = urljoin(registry_url + "/", started.headers["Location"])
    separator = "&" if "?" in location else "?"
    reply = request(f"{location}{separator}digest={sha256(blob)}", "PUT", blob,
                    {**headers, "Content-Type": "application/octet-stream"})
    assert reply.status == 201, reply.body


def signature_for(registry_url: str, repository: str, subject_digest: str, subject_size: int, headers=None) -> bytes:
    config, payload = b"{}", b"signed:" + subject_digest.encode()
    for blob in (config, payload):
        upload(registry_url, repository, blob, headers or {})
    document = json.loads(image_manifest(config, [payload], config_type="application/vnd.oci.empty.v1+json",
                                         artifact_type="application/vnd.example.signature"))
    document["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": subject_size}
    return json.dumps(document).encode()


def plain_skopeo_push(layout: Path, tag: str, registry: Distribution, reference: str) -> None:
    import subprocess

    result = subprocess.run(["skopeo", "copy", "--preserve-digests", "--dest-tls-verify=false", f"oci:{layout}:{tag}",
                             f"docker://{registry.host}/{reference}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_sync_down_and_up_against_distribution_with_signatures_through_the_tag_schema(distribution, tmp_path: Path):
    layout = tmp_path / "layout"
    digest = make_image(layout, "v1")
    body = read_blob(layout, digest)
    plain_skopeo_push(layout, "v1", distribution, "factory/app:v1")
    signature = signature_for(distribution.url, "factory/app", digest, len(body))
    push_plain(distribution.url, "factory/app", sha256(signature), signature, OCI_MANIFEST)
    schema_index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha256(signature), "size": len(signature),
         "artifactType": "application/vnd.example.signature"}]}).encode()
    push_plain(distribution.url, "factory/app", digest.replace(":", "-"), schema_index, OCI_INDEX)

    child = start_instance(tmp_path, "plant-writer", parent=distribution, mode="ReadWrite", repositories=["factory/*"])
    try:
        arrived = wait_until(lambda: manifest_at(child, "factory/app", "v1"), timeout=40, what="the image from distribution")
        assert arrived.body == body

        def signature_listed():
            reply = request(f"{child.url}/v2/factory/app/referrers/{digest}", headers=basic(*READER))
            return [m["digest"] for m in reply.json()["manifests"]] == [sha256(signature)]

        wait_until(signature_listed, timeout=20, what="the signature through the referrers tag schema")
        status = wait_until(lambda: (lambda s: s if "PARENT_NOT_CONNECTED" in codes(s)
                                     and s["activation"]["status"] == "Active" else None)(status_of(child)),
                            what="Active with PARENT_NOT_CONNECTED")
        assert status["parent"]["kind"] == "plain"
        assert next(d for d in status["statusDetails"] if d["code"] == "PARENT_NOT_CONNECTED")["severity"] == "Warning"

        # up: a local push and a signature made at the child reach distribution, the signature in the tag schema
        local = make_image(layout, "local")
        local_body = read_blob(layout, local)
        skopeo_push(layout, "local", child, "factory/app:local")
        local_signature = signature_for(child.url, "factory/app", local, len(local_body), basic(*WRITER))
        push_plain(child.url, "factory/app", sha256(local_signature), local_signature, OCI_MANIFEST, basic(*WRITER))

        def upstream_done():
            tag = request(f"{distribution.url}/v2/factory/app/manifests/local", headers={"Accept": OCI_MANIFEST})
            schema = request(f"{distribution.url}/v2/factory/app/manifests/{local.replace(':', '-')}",
                             headers={"Accept": OCI_INDEX})
            return (tag.status == 200 and tag.body == local_body and schema.status == 200
                    and [m["digest"] for m in schema.json()["manifests"]] == [sha256(local_signature)])

        wait_until(upstream_done, timeout=40, what="the local push and its signature at distribution")
    finally:
        child.stop()


def test_an_entry_distribution_refuses_is_parked_without_blocking_other_repositories(distribution, tmp_path: Path):
    child = start_instance(tmp_path, "plant-writer", parent=distribution, mode="ReadWrite", repositories=["factory/*"])
    try:
        layout = tmp_path / "layout"
        make_image(layout, "a")
        skopeo_push(layout, "a", child, "factory/app:a")
        wait_until(lambda: request(f"{distribution.url}/v2/factory/app/manifests/a",
                                   headers={"Accept": OCI_MANIFEST}).status == 200, timeout=40, what="tag a upstream")
        # distribution 2.8 refuses deleting by tag: that entry parks, and other repositories go on
        assert request(f"{child.url}/v2/factory/app/manifests/a", "DELETE", headers=basic(*WRITER)).status == 202
        other = make_image(layout, "b")
        skopeo_push(layout, "b", child, "factory/other:b")
        wait_until(lambda: request(f"{distribution.url}/v2/factory/other/manifests/b",
                                   headers={"Accept": OCI_MANIFEST}).headers.get("Docker-Content-Digest") == other,
                   timeout=40, what="the other repository upstream")
        rejected = wait_until(lambda: (lambda s: s if "UPLOAD_REJECTED" in codes(s) else None)(status_of(child)),
                              timeout=40, what="UPLOAD_REJECTED for the tag delete")
        assert "factory/app:a" in next(d for d in rejected["statusDetails"] if d["code"] == "UPLOAD_REJECTED")["description"]
    finally:
        child.stop()
