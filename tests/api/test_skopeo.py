"""Real skopeo against a real `connected-registry serve` process."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

from tests.support.azurite import BOTH_BLOB_STORES
from tests.support.layouts import make_image, make_multiplatform_index, manifest_digest, read_blob

pytestmark = BOTH_BLOB_STORES


def run_skopeo(*arguments: str) -> subprocess.CompletedProcess:
    result = subprocess.run(["skopeo", *arguments], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"skopeo {' '.join(arguments)} failed:\n{result.stderr}"
    return result


def registry_manifest(registry, repository: str, reference: str) -> tuple[bytes, str]:
    request = urllib.request.Request(
        f"{registry.url}/v2/{repository}/manifests/{reference}",
        headers={"Accept": "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read(), response.headers["Docker-Content-Digest"]


def test_skopeo_pushes_and_pulls_an_image_with_unchanged_digests(registry, skopeo, tmp_path: Path):
    source = tmp_path / "source"
    digest = make_image(source, "v1", layers=3, size="256K")
    run_skopeo("copy", "--preserve-digests", "--dest-tls-verify=false",
           f"oci:{source}:v1", f"docker://{registry.host}/factory/app:v1")

    body, served_digest = registry_manifest(registry, "factory/app", "v1")
    assert served_digest == digest
    assert body == read_blob(source, digest)

    pulled = tmp_path / "pulled"
    run_skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/factory/app:v1", f"oci:{pulled}:v1")
    assert manifest_digest(pulled, "v1") == digest
    manifest = json.loads(read_blob(pulled, digest))
    for layer in manifest["layers"] + [manifest["config"]]:
        assert read_blob(pulled, layer["digest"]) == read_blob(source, layer["digest"])


def test_skopeo_copy_all_keeps_a_multiplatform_index(registry, skopeo, tmp_path: Path):
    source = tmp_path / "source"
    index_digest = make_multiplatform_index(source, "multi")
    run_skopeo("copy", "--all", "--preserve-digests", "--dest-tls-verify=false",
           f"oci:{source}:multi", f"docker://{registry.host}/factory/multi:1.0")

    body, served_digest = registry_manifest(registry, "factory/multi", "1.0")
    assert served_digest == index_digest
    assert body == read_blob(source, index_digest)
    for child in json.loads(body)["manifests"]:
        child_body, child_digest = registry_manifest(registry, "factory/multi", child["digest"])
        assert child_digest == child["digest"]
        assert child_body == read_blob(source, child["digest"])

    pulled = tmp_path / "pulled"
    run_skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{registry.host}/factory/multi:1.0", f"oci:{pulled}:multi")
    assert manifest_digest(pulled, "multi") == index_digest


def test_skopeo_inspect_lists_tags(registry, skopeo, tmp_path: Path):
    source = tmp_path / "source"
    make_image(source, "a")
    make_image(source, "b")
    for tag in ("a", "b"):
        run_skopeo("copy", "--preserve-digests", "--dest-tls-verify=false",
               f"oci:{source}:{tag}", f"docker://{registry.host}/lib/tool:{tag}")
    listing = json.loads(run_skopeo("list-tags", "--tls-verify=false", f"docker://{registry.host}/lib/tool").stdout)
    assert listing["Tags"] == ["a", "b"]
