"""Small builders for OCI content in tests: blobs, image manifests, indexes, referrers."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def descriptor(media_type: str, data: bytes, **extra) -> dict:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def image_manifest(config: bytes, layers: list[bytes], *, subject: bytes | None = None,
                   artifact_type: str | None = None, config_type: str = OCI_CONFIG,
                   annotations: dict | None = None, docker: bool = False) -> bytes:
    document: dict = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": descriptor(DOCKER_CONFIG if docker else config_type, config),
        "layers": [descriptor(DOCKER_LAYER if docker else OCI_LAYER, layer) for layer in layers],
    }
    if artifact_type:
        document["artifactType"] = artifact_type
    if subject is not None:
        document["subject"] = descriptor(OCI_MANIFEST, subject)
    if annotations:
        document["annotations"] = annotations
    return json.dumps(document, indent=1).encode()


def index_manifest(manifests: list[bytes], *, docker: bool = False) -> bytes:
    document = {
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST if docker else OCI_INDEX,
        "manifests": [
            descriptor(DOCKER_MANIFEST if docker else OCI_MANIFEST, body,
                       platform={"architecture": arch, "os": "linux"})
            for body, arch in zip(manifests, ["amd64", "arm64", "arm", "386", "s390x"])
        ],
    }
    return json.dumps(document).encode()


def index_of(body: bytes, count: int) -> bytes:
    """An index naming the same manifest `count` times."""
    entry = descriptor(json.loads(body)["mediaType"], body)
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry] * count}).encode()


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


async def push_blob(api, repository: str, data: bytes) -> str:
    """Monolithic POST+PUT through the in-process registry; returns the digest."""
    digest = sha256(data)
    async with api.request("POST", f"/v2/{repository}/blobs/uploads/") as response:
        assert response.status == 202, await response.text()
        location = response.headers["Location"]
    async with api.session.put(location, params={"digest": digest}, data=data,
                               headers={"Content-Type": "application/octet-stream"}) as response:
        assert response.status == 201, await response.text()
    return digest


async def push_manifest(api, repository: str, reference: str, body: bytes, media_type: str | None = None):
    media_type = media_type or json.loads(body).get("mediaType", OCI_MANIFEST)
    async with api.request("PUT", f"/v2/{repository}/manifests/{reference}", data=body,
                           headers={"Content-Type": media_type}) as response:
        assert response.status == 201, await response.text()
        return dict(response.headers)


async def push_image(api, repository: str, tag: str | None, *, layers: int = 2, layer_size: int = 1024,
                     **manifest_options) -> tuple[bytes, str]:
    """Push a config, `layers` random layers and a manifest; returns (manifest bytes, digest)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": os.urandom(4).hex()}).encode()
    blobs = [random_bytes(layer_size) for _ in range(layers)]
    for blob in [config, *blobs]:
        await push_blob(api, repository, blob)
    body = image_manifest(config, blobs, **manifest_options)
    await push_manifest(api, repository, tag or sha256(body), body)
    return body, sha256(body)


# --- Helpers for the per-resource API tests (appended; the builders above are unchanged). ----------

OCI_ERROR_CODES = {
    "BLOB_UNKNOWN", "BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN", "DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID", "MANIFEST_UNKNOWN", "NAME_INVALID", "NAME_UNKNOWN", "SIZE_INVALID", "UNAUTHORIZED",
    "DENIED", "UNSUPPORTED", "TOOMANYREQUESTS",
}


async def expect_oci_error(response, status: int, code: str) -> dict:
    """Assert an OCI error answer: `status`, a JSON body {"errors": [{code, message, ...}]} led by `code`.

    Returns that first error object. (HEAD answers carry no body: check their status only.)
    """
    text = await response.text()
    assert response.status == status, f"expected {status} {code}, got {response.status}: {text[:500]}"
    assert response.content_type == "application/json", f"error body is {response.content_type}: {text[:200]}"
    body = json.loads(text)
    assert isinstance(body.get("errors"), list) and body["errors"], text[:500]
    error = body["errors"][0]
    assert error.get("code") == code, f"expected error code {code}, got {text[:500]}"
    assert isinstance(error.get("message"), str) and error["message"], text[:500]
    return error


async def start_upload(api, repository: str) -> str:
    """POST /v2/<repository>/blobs/uploads/; returns the session's Location (absolute URL)."""
    async with api.request("POST", f"/v2/{repository}/blobs/uploads/") as response:
        assert response.status == 202, await response.text()
        return response.headers["Location"]


def manifest_document(media_type: str, config: dict | None = None, layers: list[dict] | None = None,
                      **fields) -> bytes:
    """A hand-made image manifest (for layer media types the other builders do not cover)."""
    document: dict = {"schemaVersion": 2, "mediaType": media_type, "config": config, "layers": layers or []}
    document.update(fields)
    return json.dumps(document).encode()


class ServedStore:
    """The registry app over a given RegistryStore on a loopback listener (same surface as the `api` fixture)."""

    def __init__(self, store, server, session) -> None:
        self.store = store
        self.server = server
        self.session = session

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def request(self, method: str, path: str, **kwargs):
        return self.session.request(method, self.url(path), **kwargs)


def serve_store(store, *, mode: str = "ReadWrite"):
    """Async context manager: serve `store` (which the caller owns and closes) in-process; yields ServedStore."""
    import contextlib
    from types import SimpleNamespace

    import aiohttp
    from aiohttp.test_utils import TestServer

    from connected_registry.api import create_app
    from connected_registry.api.context import ApiContext
    from connected_registry.auth import AnonymousAccess

    @contextlib.asynccontextmanager
    async def serving():
        instance = SimpleNamespace(name="connected-registry", mode=mode, is_root=True, repositories=(), blob_redirect=False)
        server = TestServer(create_app(ApiContext(store=store, access=AnonymousAccess(), instance=instance)),
                            host="127.0.0.1")
        await server.start_server()
        try:
            async with aiohttp.ClientSession(auto_decompress=False) as session:
                yield ServedStore(store, server, session)
        finally:
            await server.close()

    return serving()


# --- Multi-platform indexes as buildx writes them (issue 16: platforms). ----------------------------------------

IN_TOTO = "application/vnd.in-toto+json"


@dataclass
class PlatformImage:
    """One image of an index: its manifest, its blobs (config first), and the index entry naming it."""

    body: bytes
    blobs: list[bytes]
    entry: dict

    @property
    def digest(self) -> str:
        return sha256(self.body)


def platform_image(platform: str, layers: int = 1, layer_size: int = 1024) -> PlatformImage:
    """An image for `platform` (os/architecture[/variant]): its config says the platform, its layers are random."""
    os_name, architecture, *variant = platform.split("/")
    platform_object = {"architecture": architecture, "os": os_name, **({"variant": variant[0]} if variant else {})}
    config = json.dumps({**platform_object, "rootfs": {"type": "layers", "diff_ids": []},
                         "n": os.urandom(4).hex()}).encode()
    blobs = [config, *(random_bytes(layer_size) for _ in range(layers))]
    body = image_manifest(config, blobs[1:])
    return PlatformImage(body, blobs, descriptor(OCI_MANIFEST, body, platform=platform_object))


def attestation_of(image: PlatformImage) -> PlatformImage:
    """buildx's attestation manifest of `image`: platform unknown/unknown, naming the image in its annotations."""
    statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "subject": image.digest}).encode()
    config = json.dumps({"architecture": "unknown", "os": "unknown"}).encode()
    body = manifest_document(OCI_MANIFEST, descriptor(OCI_CONFIG, config), [descriptor(IN_TOTO, statement)])
    return PlatformImage(body, [config, statement], descriptor(
        OCI_MANIFEST, body, platform={"architecture": "unknown", "os": "unknown"},
        annotations={"vnd.docker.reference.digest": image.digest, "vnd.docker.reference.type": "attestation-manifest"}))


def artifact_about(image: PlatformImage, artifact_type: str = "application/vnd.example.sbom") -> PlatformImage:
    """An OCI artifact whose subject is `image`, listed in the index without a platform."""
    payload = os.urandom(64)
    body = image_manifest(b"{}", [payload], subject=image.body, artifact_type=artifact_type, config_type=OCI_EMPTY)
    return PlatformImage(body, [b"{}", payload], descriptor(OCI_MANIFEST, body, artifactType=artifact_type))


def platform_index(images: list[PlatformImage]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [i.entry for i in images]}).encode()
