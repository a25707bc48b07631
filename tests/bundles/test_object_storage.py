"""An instance whose blobs are in Azure Blob Storage (Azurite) exports bundles, as a directory and as a tar, read
from the store as it streams: skopeo reads both, and a stopped instance on the filesystem imports the tar."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.bundles.bundle_api import cli, import_into, push_image, state_in
from tests.support.azurite import Azurite
from tests.sync.hierarchy import READER, start_instance

LAYER = 3 << 20  # more than one read from the store


def test_an_instance_on_azure_blob_storage_exports_bundles(tmp_path: Path, azurite: Azurite):
    root = start_instance(tmp_path, "factory-root",
                          env={"ACR_REGISTRY_BLOB_STORE": azurite.new_store(), **azurite.environment()})
    try:
        digest = push_image(root, "factory/app", "1.0", layer_size=LAYER)
        assert not list((tmp_path / "factory-root" / "data" / "blobs").rglob("sha256/*/*")), "blobs went to files"
        for suffix in ("", ".tar"):
            cli("export", "--registry", root.url, "--username", READER[0], "--password", READER[1],
                "--repository", "factory/*", "--output", str(tmp_path / f"bundle{suffix}"))
    finally:
        root.stop()
    for reference in (f"oci:{tmp_path / 'bundle'}:factory/app:1.0", f"oci-archive:{tmp_path / 'bundle.tar'}:factory/app:1.0"):
        inspected = subprocess.run(["skopeo", "inspect", reference], check=True, capture_output=True, text=True,
                                   timeout=60)
        assert json.loads(inspected.stdout)["Digest"] == digest
    receiver = tmp_path / "receiver"
    import_into(tmp_path / "bundle.tar", "--data", str(receiver), "--unsigned")
    assert state_in(receiver)["factory/app"]["1.0"] == digest
