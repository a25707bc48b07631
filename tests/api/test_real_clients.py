"""Real clients against a real `connected-registry serve` process: containerd/ctr 1.6, moby 20.10 (the IoT Edge engine)
and skopeo, directly over plain HTTP on loopback and through nginx configured as the IoT Edge API proxy (TLS with a
test CA, only /v2 and /acr forwarded, X-Forwarded-Host / X-Forwarded-Proto set and Host not).

How each client behaves and why the commands look the way they do: ../shared/reference/real-clients.md.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import urllib.request
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

from tests.support.clients import registry_requests, rootfs_tar, skopeo
from tests.support.layouts import make_image, manifest_digest, read_blob
from tests.support.oci import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, OCI_MANIFEST
from tests.support.pki import non_loopback_ipv4

ACCEPT_ALL = ", ".join([OCI_MANIFEST, DOCKER_MANIFEST, "application/vnd.oci.image.index.v1+json",
                        "application/vnd.docker.distribution.manifest.list.v2+json"])


def served_manifest(registry, repository: str, reference: str) -> tuple[bytes, str, str]:
    """(body, Docker-Content-Digest, Content-Type) of a manifest, straight from the registry's API."""
    request = urllib.request.Request(f"{registry.url}/v2/{repository}/manifests/{reference}",
                                     headers={"Accept": ACCEPT_ALL})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read(), response.headers["Docker-Content-Digest"], response.headers["Content-Type"]


def served_blob(registry, repository: str, digest: str) -> bytes:
    with urllib.request.urlopen(f"{registry.url}/v2/{repository}/blobs/{digest}", timeout=10) as response:
        return response.read()


def push_with_skopeo(layout: Path, tag: str, destination: str, *flags: str) -> None:
    skopeo("copy", "--preserve-digests", *(flags or ("--dest-tls-verify=false",)),
           f"oci:{layout}:{tag}", f"docker://{destination}")


def image_blobs(layout: Path, digest: str) -> list[str]:
    manifest = json.loads(read_blob(layout, digest))
    return [manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]]


# --- containerd / ctr -------------------------------------------------------------------------------------------


def test_ctr_pulls_and_unpacks_an_image_pushed_by_skopeo(registry, containerd, tmp_path: Path):
    layout = tmp_path / "image"
    digest = make_image(layout, "v1", layers=2, size="256K")
    push_with_skopeo(layout, "v1", f"{registry.host}/edge/app:v1")
    reference = f"{registry.host}/edge/app:v1"

    containerd.ctr("images", "pull", "--plain-http", reference)

    assert containerd.image_digest(reference) == digest
    check = containerd.ctr("images", "check", f"name=={reference}").stdout
    assert re.search(r"complete \(3/3\)\s+\S+ \S+/\S+ \S+\s+true", check), check  # all blobs present, unpacked
    for blob in image_blobs(layout, digest):
        assert containerd.content(blob) == read_blob(layout, blob)


def test_ctr_pushes_with_monolithic_puts_and_the_manifest_digest_is_kept(registry, distribution, containerd,
                                                                         tmp_path: Path):
    # The image comes from another registry, which ours has never seen: ctr asks to mount from the source repository
    # (its label names the host without the port), gets 202 and a fresh upload instead, and PUTs each blob whole.
    layout = tmp_path / "image"
    digest = make_image(layout, "v1", layers=2, size="256K")
    push_with_skopeo(layout, "v1", f"{distribution.host}/edge/app:v1")
    containerd.ctr("images", "pull", "--plain-http", f"{distribution.host}/edge/app:v1")
    target = f"{registry.host}/edge/app:v1"
    containerd.ctr("images", "tag", f"{distribution.host}/edge/app:v1", target)

    pushed = containerd.ctr("images", "push", "--plain-http", target, debug=True)

    requests = registry_requests(pushed.stderr)
    blobs = image_blobs(layout, digest)
    assert not [r for r in requests if r[0] == "PATCH"], requests
    monolithic = [url for method, url in requests if method == "PUT" and "/blobs/uploads/" in url]
    assert sorted(re.search(r"digest=([^&]+)", url).group(1).replace("%3A", ":") for url in monolithic) \
        == sorted(blobs), requests
    body, served_digest, content_type = served_manifest(registry, "edge/app", "v1")
    assert (served_digest, content_type) == (digest, OCI_MANIFEST)
    assert body == read_blob(layout, digest)
    for blob in blobs:
        assert served_blob(registry, "edge/app", blob) == read_blob(layout, blob)
    pulled = tmp_path / "pulled"
    skopeo("copy", "--src-tls-verify=false", f"docker://{target}", f"oci:{pulled}:v1")
    assert manifest_digest(pulled, "v1") == digest

    # The same content to another repository of the same registry: ctr mounts instead of uploading.
    mounted = f"{registry.host}/edge/mounted:v1"
    containerd.ctr("images", "tag", target, mounted)
    requests = registry_requests(containerd.ctr("images", "push", "--plain-http", mounted, debug=True).stderr)
    mounts = [url for method, url in requests if method == "POST" and "mount=" in url]
    assert len(mounts) == len(blobs) and all("from=edge/app" in url for url in mounts), requests
    assert not [url for method, url in requests if method in ("PUT", "PATCH") and "/blobs/uploads/" in url], requests
    assert served_manifest(registry, "edge/mounted", "v1")[1] == digest


# --- dockerd (moby) --------------------------------------------------------------------------------------------


def test_docker_pulls_an_image_pushed_by_skopeo_and_pushes_it_retagged_as_docker_schema2(registry, dockerd,
                                                                                      tmp_path: Path):
    layout = tmp_path / "image"
    digest = make_image(layout, "v1", layers=2, size="256K")
    push_with_skopeo(layout, "v1", f"{registry.host}/edge/app:v1")
    original = json.loads(read_blob(layout, digest))

    dockerd.docker("pull", f"{registry.host}/edge/app:v1")

    image_id, repo_digests = dockerd.docker("image", "inspect", "--format", "{{.Id}} {{json .RepoDigests}}",
                                            f"{registry.host}/edge/app:v1").stdout.split(" ", 1)
    assert image_id == original["config"]["digest"]
    assert f"{registry.host}/edge/app@{digest}" in json.loads(repo_digests)

    dockerd.docker("tag", f"{registry.host}/edge/app:v1", f"{registry.host}/edge/retagged:v2")
    output = dockerd.docker("push", f"{registry.host}/edge/retagged:v2").stdout
    pushed_digest = re.search(r"v2: digest: (sha256:[0-9a-f]{64})", output).group(1)

    body, served_digest, content_type = served_manifest(registry, "edge/retagged", "v2")
    assert (served_digest, content_type) == (pushed_digest, DOCKER_MANIFEST)
    converted = json.loads(body)
    assert converted["mediaType"] == DOCKER_MANIFEST
    assert (converted["config"]["mediaType"], converted["config"]["digest"]) == (DOCKER_CONFIG,
                                                                                 original["config"]["digest"])
    assert [(layer["mediaType"], layer["digest"]) for layer in converted["layers"]] == \
        [(DOCKER_LAYER, layer["digest"]) for layer in original["layers"]]

    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/edge/retagged:v2").stdout
    assert raw.encode() == body
    pulled = tmp_path / "pulled"
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/edge/retagged:v2", f"oci:{pulled}:v2")
    copied = json.loads(read_blob(pulled, manifest_digest(pulled, "v2")))
    # skopeo rewrites the config when it converts to OCI; the filesystem it describes stays the same
    assert json.loads(read_blob(pulled, copied["config"]["digest"]))["rootfs"] == \
        json.loads(read_blob(layout, original["config"]["digest"]))["rootfs"]
    assert [layer["digest"] for layer in copied["layers"]] == [layer["digest"] for layer in original["layers"]]


def test_docker_uploads_an_image_the_registry_has_never_seen(registry, dockerd, tmp_path: Path):
    payload = os.urandom(300_000)
    rootfs = rootfs_tar(payload)
    (tmp_path / "rootfs.tar").write_bytes(rootfs)
    reference = f"{registry.host}/edge/imported:v1"
    dockerd.docker("import", str(tmp_path / "rootfs.tar"), reference)

    output = dockerd.docker("push", reference).stdout

    assert "Pushed" in output and "Mounted" not in output, output
    pushed_digest = re.search(r"v1: digest: (sha256:[0-9a-f]{64})", output).group(1)
    assert served_manifest(registry, "edge/imported", "v1")[1:] == (pushed_digest, DOCKER_MANIFEST)
    pulled = tmp_path / "pulled"
    skopeo("copy", "--src-tls-verify=false", f"docker://{reference}", f"oci:{pulled}:v1")
    manifest = json.loads(read_blob(pulled, manifest_digest(pulled, "v1")))
    config = json.loads(read_blob(pulled, manifest["config"]["digest"]))
    (layer,) = manifest["layers"]
    uncompressed = gzip.decompress(read_blob(pulled, layer["digest"]))
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(uncompressed).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(uncompressed)) as archive:
        assert archive.extractfile("payload/data.bin").read() == payload


# --- through nginx as the IoT Edge API proxy ------------------------------------------------------------------


def test_skopeo_and_ctr_pull_through_the_api_proxy_over_tls_with_the_test_ca(registry, api_proxy, containerd,
                                                                            tmp_path: Path):
    layout = tmp_path / "image"
    digest = make_image(layout, "v1", layers=2, size="256K")
    push_with_skopeo(layout, "v1", f"{registry.host}/edge/app:v1")
    through_proxy = f"{api_proxy.host}/edge/app:v1"

    untrusted = skopeo("inspect", "--raw", f"docker://{through_proxy}", check=False)
    assert untrusted.returncode != 0 and "certificate signed by unknown authority" in untrusted.stderr, untrusted

    pulled = tmp_path / "pulled"
    skopeo("copy", "--src-cert-dir", str(api_proxy.cert_dir), f"docker://{through_proxy}", f"oci:{pulled}:v1")
    assert manifest_digest(pulled, "v1") == digest
    for blob in image_blobs(layout, digest):
        assert read_blob(pulled, blob) == read_blob(layout, blob)

    # ctr 1.6 speaks plain HTTP to 127.0.0.1 unless a hosts.toml says https (with the CA)
    containerd.ctr("images", "pull", "--hosts-dir", str(api_proxy.ctr_hosts_dir), through_proxy)
    assert containerd.image_digest(through_proxy) == digest

    blob_gets = lambda rows: [uri for method, uri, status in rows  # noqa: E731
                              if method == "GET" and "/blobs/sha256:" in uri and status == 200]
    api_proxy.wait_for_requests(lambda rows: len(blob_gets(rows)) >= 2 * len(image_blobs(layout, digest)),
                       "every blob fetched through the proxy by skopeo and by ctr")


def test_upload_locations_point_at_the_api_proxy_and_pushes_through_it_work(registry, api_proxy, containerd,
                                                                           tmp_path: Path):
    # What the registry answers behind the proxy: Location is built from X-Forwarded-Proto and X-Forwarded-Host.
    response = api_proxy.open("POST", "/v2/edge/location/blobs/uploads/")
    assert response.status == 202, response.read()
    location = urlsplit(urljoin(f"{api_proxy.url}/v2/edge/location/blobs/uploads/", response.headers["Location"]))
    assert (location.scheme, location.netloc) == ("https", api_proxy.host), response.headers["Location"]
    assert location.path.startswith("/v2/edge/location/blobs/uploads/")

    # skopeo: POST, PATCH, PUT, each one through the proxy
    layout = tmp_path / "image"
    digest = make_image(layout, "v1", layers=2, size="256K")
    push_with_skopeo(layout, "v1", f"{api_proxy.host}/edge/via-proxy:v1", "--dest-cert-dir", str(api_proxy.cert_dir))
    blobs = image_blobs(layout, digest)

    def finished_uploads(rows, repository, method):
        return [uri for m, uri, status in rows
                if m == method and uri.startswith(f"/v2/{repository}/blobs/uploads/") and status in (201, 202)]

    api_proxy.wait_for_requests(lambda rows: len(finished_uploads(rows, "edge/via-proxy", "PUT")) == len(blobs)
                       and len(finished_uploads(rows, "edge/via-proxy", "PATCH")) >= len(blobs)
                       and ("PUT", "/v2/edge/via-proxy/manifests/v1", 201) in rows,
                       "skopeo's PATCH and PUT requests")
    body, served_digest, _ = served_manifest(registry, "edge/via-proxy", "v1")
    assert (body, served_digest) == (read_blob(layout, digest), digest)

    # ctr: POST, then one PUT with the whole blob, through nginx (which buffers request bodies). ctr labels content
    # with the host name it came from (without the port) and mounts from there when it can: pulled as
    # localhost:PORT, nothing is labelled 127.0.0.1, so every blob is really uploaded through the proxy.
    other = tmp_path / "other"
    other_digest = make_image(other, "v1", layers=2, size="256K")
    push_with_skopeo(other, "v1", f"{registry.host}/edge/direct:v1")
    source = f"localhost:{registry.port}/edge/direct:v1"
    containerd.ctr("images", "pull", "--plain-http", source)
    target = f"{api_proxy.host}/edge/ctr-via-proxy:v1"
    containerd.ctr("images", "tag", source, target)
    containerd.ctr("images", "push", "--hosts-dir", str(api_proxy.ctr_hosts_dir), target)
    other_blobs = image_blobs(other, other_digest)
    api_proxy.wait_for_requests(lambda rows: len(finished_uploads(rows, "edge/ctr-via-proxy", "PUT"))
                       == len(other_blobs) and ("PUT", "/v2/edge/ctr-via-proxy/manifests/v1", 201) in rows,
                       "ctr's monolithic PUTs")
    assert not finished_uploads(api_proxy.requests(), "edge/ctr-via-proxy", "PATCH")
    assert served_manifest(registry, "edge/ctr-via-proxy", "v1")[1] == other_digest
    for blob in other_blobs:
        assert served_blob(registry, "edge/ctr-via-proxy", blob) == read_blob(other, blob)


def test_docker_pulls_and_pushes_through_the_api_proxy_verifying_the_test_ca(registry, dockerd, start_api_proxy,
                                                                           test_pki, tmp_path: Path):
    address = non_loopback_ipv4()
    if address is None:
        pytest.skip("no non-loopback IPv4 address: moby never verifies TLS on 127.0.0.0/8, so there is nothing to test")
    proxy = start_api_proxy(registry.host, extra_addresses=[address])
    proxy_host = f"{address}:{proxy.port}"
    layout = tmp_path / "image"
    digest = make_image(layout, "v1", layers=2, size="256K")
    push_with_skopeo(layout, "v1", f"{registry.host}/edge/app:v1")

    untrusted = dockerd.docker("pull", f"{proxy_host}/edge/app:v1", check=False)
    assert untrusted.returncode != 0 and "certificate signed by unknown authority" in untrusted.stderr, untrusted

    dockerd.trust(proxy_host, test_pki.ca_cert)  # /etc/docker/certs.d/<host:port>/ca.crt inside dockerd's namespace
    dockerd.docker("pull", f"{proxy_host}/edge/app:v1")
    assert f"{proxy_host}/edge/app@{digest}" in dockerd.repo_digests(f"{proxy_host}/edge/app:v1")

    payload = os.urandom(200_000)
    (tmp_path / "rootfs.tar").write_bytes(rootfs_tar(payload))
    dockerd.docker("import", str(tmp_path / "rootfs.tar"), f"{proxy_host}/edge/docker-via-proxy:v1")
    output = dockerd.docker("push", f"{proxy_host}/edge/docker-via-proxy:v1").stdout
    pushed_digest = re.search(r"v1: digest: (sha256:[0-9a-f]{64})", output).group(1)
    proxy.wait_for_requests(lambda rows: ("PUT", "/v2/edge/docker-via-proxy/manifests/v1", 201) in rows
                       and sum(1 for m, uri, s in rows
                               if m == "PATCH" and "/edge/docker-via-proxy/blobs/uploads/" in uri and s == 202) == 2,
                       "docker's PATCH uploads (layer and config) and manifest PUT")
    assert served_manifest(registry, "edge/docker-via-proxy", "v1")[1:] == (pushed_digest, DOCKER_MANIFEST)
    skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/edge/docker-via-proxy:v1",
           f"oci:{tmp_path / 'pulled'}:v1")
