"""OCI image layouts on disk for tests with real clients (made with mkimage.py, no engine needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.oci import OCI_INDEX, sha256

MKIMAGE = Path(__file__).with_name("mkimage.py")


def make_image(layout: Path, tag: str, layers: int = 2, size: str = "64K") -> str:
    """Add an image to an OCI layout; returns its manifest digest."""
    subprocess.run(
        [sys.executable, str(MKIMAGE), str(layout), "--tag", tag, "--layers", str(layers), "--size", size],
        check=True, capture_output=True,
    )
    return manifest_digest(layout, tag)


def _index(layout: Path) -> dict:
    return json.loads((layout / "index.json").read_text())


def manifest_digest(layout: Path, tag: str) -> str:
    for entry in _index(layout)["manifests"]:
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return entry["digest"]
    raise KeyError(tag)


def read_blob(layout: Path, digest: str) -> bytes:
    algorithm, hex_part = digest.split(":")
    return (layout / "blobs" / algorithm / hex_part).read_bytes()


def make_multiplatform_index(layout: Path, tag: str, platforms: tuple[str, ...] = ("linux/amd64", "linux/arm64"),
                             layers: int = 2, size: str = "32K") -> str:
    """One image per platform (OCI platform strings, "os/architecture[/variant]") and an OCI index over them,
    tagged `tag`; returns the index digest."""
    children = []
    for platform in platforms:
        digest = make_image(layout, f"{tag}-{platform.replace('/', '-')}", layers=layers, size=size)
        body = read_blob(layout, digest)
        os_name, architecture, *variant = platform.split("/")
        children.append({
            "mediaType": json.loads(body)["mediaType"], "digest": digest, "size": len(body),
            "platform": {"architecture": architecture, "os": os_name, **({"variant": variant[0]} if variant else {})},
        })
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode()
    digest = sha256(body)
    (layout / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(body)
    index = _index(layout)
    index["manifests"].append({
        "mediaType": OCI_INDEX, "digest": digest, "size": len(body),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    })
    (layout / "index.json").write_text(json.dumps(index))
    return digest
