"""A broken image at the parent holds up nothing else (SPEC 7.2): its repository is reported and asked again
with backoff, every other repository syncs, and the broken one arrives once the parent has it whole."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.support.azurite import BLOB_STORE_VARIABLE
from tests.support.http import basic, request
from tests.support.oci import image_manifest, random_bytes, sha256
from tests.support.processes import wait_until
from tests.sync import hierarchy
from tests.sync.hierarchy import BOTH_TOP_TIERS, READER, WRITER, start_instance
from tests.sync.instance_api import manifest_at, push_blob, status_of

pytestmark = BOTH_TOP_TIERS  # the parent's side on the embedded stores and as a scale-out replica


class StoredLayer:
    """A layer's bytes where `instance` keeps them: a file in its data directory, or, on a clustered root, a blob in
    its Azurite container (hierarchy.py's tiers)."""

    def __init__(self, instance, digest: str) -> None:
        self.store = (instance.process.env or {}).get(BLOB_STORE_VARIABLE)
        self.name = f"blobs/sha256/{digest[7:]}"
        self.file = instance.process.data_dir / "blobs" / "sha256" / digest[7:9] / digest[7:]

    def write_bytes(self, data: bytes) -> None:
        """Other bytes in its place, behind the registry's back, as a failing disk (or a repair) would."""
        if self.store:
            hierarchy.clustered_stores.azurite.overwrite(self.store, self.name, data)
            return
        os.chmod(self.file, 0o644)
        self.file.write_bytes(data)

    def exists(self) -> bool:
        if self.store:
            return self.name in hierarchy.clustered_stores.azurite.blob_names(self.store)
        return self.file.exists()


def push_image(instance, repository: str, tag: str, layer: bytes, damage: bool = False) -> tuple[str, StoredLayer]:
    """An image of one layer. With `damage`, the layer's bytes at `instance` are overwritten with others of the
    same length after it was stored and before the manifest is pushed, as a failing disk would. Returns the
    manifest's digest and the stored layer."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    push_blob(instance, repository, config)
    stored = StoredLayer(instance, push_blob(instance, repository, layer))
    if damage:
        stored.write_bytes(bytes(byte ^ 0xFF for byte in layer))
    body = image_manifest(config, [layer])
    reply = request(f"{instance.url}/v2/{repository}/manifests/{tag}", "PUT", body,
                    {**basic(*WRITER), "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert reply.status == 201, reply.body
    return sha256(body), stored


def download_failed(leaf) -> str | None:
    details = [d for d in status_of(leaf)["statusDetails"] if d["code"] == "DOWNLOAD_FAILED"]
    return details[0]["description"] if details else None


def test_a_damaged_image_at_the_parent_is_reported_and_retried_while_everything_else_syncs(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")])
    leaf = None
    try:
        broken_layer, good_layer = random_bytes(300_000), random_bytes(200_000)
        broken_digest, broken_file = push_image(root, "factory/a-broken", "v1", broken_layer, damage=True)
        good_digest, _ = push_image(root, "factory/b-good", "v1", good_layer)

        # The first sync is a full reconcile: a-broken comes first in it and fails verification; b-good still
        # arrives. The leaf fills nothing on demand, so only the sync can bring content here.
        leaf = start_instance(tmp_path, "line1-leaf", parent=root, repositories=["factory/*"],
                              extra={"onDemand": False})
        arrived = wait_until(lambda: manifest_at(leaf, "factory/b-good", "v1"), timeout=30, what="the good image")
        assert arrived.headers["Docker-Content-Digest"] == good_digest
        description = wait_until(lambda: download_failed(leaf), timeout=30, what="DOWNLOAD_FAILED")
        assert "factory/a-broken" in description and "failed verification" in description
        assert manifest_at(leaf, "factory/a-broken", "v1") is None
        status = status_of(leaf)
        assert status["activation"]["status"] == "Active" and status["connectionState"] != "Unhealthy"

        # The event feed goes on too: a damaged push and a good push made now.
        later_broken_layer = random_bytes(100_000)
        later_digest, later_file = push_image(root, "factory/c-later", "v1", later_broken_layer, damage=True)
        push_image(root, "factory/d-fine", "v1", random_bytes(1000))
        wait_until(lambda: manifest_at(leaf, "factory/d-fine", "v1"), timeout=30, what="an image pushed after it")
        wait_until(lambda: "factory/c-later" in (download_failed(leaf) or ""), timeout=30,
                   what="the damaged push reported")
        assert manifest_at(leaf, "factory/c-later", "v1") is None

        # The parent is repaired: both arrive without another push, and the warning goes away.
        broken_file.write_bytes(broken_layer)
        later_file.write_bytes(later_broken_layer)
        for repository, digest, layer in (("factory/a-broken", broken_digest, broken_layer),
                                          ("factory/c-later", later_digest, later_broken_layer)):
            manifest = wait_until(lambda: manifest_at(leaf, repository, "v1"), timeout=60,
                                  what=f"{repository} repaired")
            assert manifest.headers["Docker-Content-Digest"] == digest
            blob = request(f"{leaf.url}/v2/{repository}/blobs/{sha256(layer)}", headers=basic(*READER))
            assert blob.status == 200 and blob.body == layer
        wait_until(lambda: download_failed(leaf) is None, timeout=30, what="DOWNLOAD_FAILED cleared")
    finally:
        if leaf is not None:
            leaf.stop()
        root.stop()


def test_a_sync_now_names_what_could_not_be_copied(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")])
    leaf = None
    try:
        _, broken_file = push_image(root, "factory/a-broken", "v1", random_bytes(50_000), damage=True)
        push_image(root, "factory/b-good", "v1", random_bytes(50_000))
        leaf = start_instance(tmp_path, "line1-leaf", parent=root, repositories=["factory/*"],
                              extra={"onDemand": False})
        wait_until(lambda: manifest_at(leaf, "factory/b-good", "v1"), timeout=30, what="the good image")
        started = request(f"{leaf.url}/acr/connected/v1/sync", "POST", b"{}",
                          {**basic("operator1", "operator-password"), "Content-Type": "application/json"})
        assert started.status == 202, started.body

        def finished():
            operation = status_of(leaf)["sync"].get("operation") or {}
            return operation if operation.get("state") in ("Succeeded", "Failed") else None

        operation = wait_until(finished, timeout=30, what="the sync-now to finish")
        assert operation["state"] == "Failed"
        assert "1 of 2 repositories" in operation["error"] and "factory/a-broken" in operation["error"]
        assert manifest_at(leaf, "factory/b-good", "v1") is not None
        assert broken_file.exists()
    finally:
        if leaf is not None:
            leaf.stop()
        root.stop()
