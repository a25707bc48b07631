"""OCI image layouts on disk for tests with real clients (made with mkimage.py, no engine needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.oci import OCI_INDEX, OCI_MANIFEST, sha256

MKIMAGE = Path(__file__).with_name("mkimage.py")


def make_image(layout: Path, tag: str, layers: int = 2, size: str = "64K", platform: str = "linux/amd64") -> str:
    """Add an image to an OCI layout; returns its manifest digest."""
    subprocess.run(
        [sys.executable, str(MKIMAGE), str(layout), "--tag", tag, "--layers", str(layers), "--size", size,
         "--platform", platform],
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
    return make_platform_index(layout, tag, list(platforms), layers, size, attestations=False)[0]


def make_platform_index(layout: Path, tag: str, platforms: list[str], layers: int = 2, size: str = "64K",
                        attestations: bool = True) -> tuple[str, dict[str, str]]:
    """An image per platform (its config says the platform; real gzipped tar layers), buildx's attestation manifest
    of each unless not wanted (platform unknown/unknown, naming its image), and an OCI index over them tagged `tag`:
    (the index digest, platform -> image digest)."""
    entries, images = [], {}
    for platform in platforms:
        digest = images[platform] = make_image(layout, f"{tag}-{platform.replace('/', '-')}", layers, size, platform)
        os_name, architecture, *variant = platform.split("/")
        entries.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(read_blob(layout, digest)),
                        "platform": {"architecture": architecture, "os": os_name,
                                     **({"variant": variant[0]} if variant else {})}})
    for platform, digest in (images.items() if attestations else []):
        config = _write_blob(layout, json.dumps({"architecture": "unknown", "os": "unknown"}).encode())
        statement = _write_blob(layout, json.dumps({"_type": "https://in-toto.io/Statement/v0.1",
                                                    "subject": digest, "platform": platform}).encode())
        body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                           "layers": [{"mediaType": "application/vnd.in-toto+json", **statement}]}).encode()
        entries.append({"mediaType": OCI_MANIFEST, **_write_blob(layout, body),
                        "platform": {"architecture": "unknown", "os": "unknown"},
                        "annotations": {"vnd.docker.reference.digest": digest,
                                        "vnd.docker.reference.type": "attestation-manifest"}})
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    _tag(layout, tag, {"mediaType": OCI_INDEX, **_write_blob(layout, index)})
    return sha256(index), images


def _write_blob(layout: Path, data: bytes) -> dict:
    digest = sha256(data)
    (layout / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def _tag(layout: Path, tag: str, descriptor: dict) -> None:
    index = _index(layout)
    index["manifests"].append({**descriptor, "annotations": {"org.opencontainers.image.ref.name": tag}})
    (layout / "index.json").write_text(json.dumps(index))
