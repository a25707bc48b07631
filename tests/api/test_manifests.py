"""Manifests (OCI end-3, end-7, end-9): by tag and by digest, for OCI manifest and index and Docker v2
manifest and manifest list; exact bytes, media type, digests, references, size limit, subject, deletes."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.azurite import STORE_PAIRS
from tests.support.oci import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    descriptor,
    expect_oci_error,
    image_manifest,
    index_manifest,
    manifest_document,
    push_blob,
    push_image,
    push_manifest,
    sha256,
    sha512,
)
from tests.support.http import request

MAX_MANIFEST = 4 * 1024 * 1024
KINDS = ["oci-manifest", "oci-index", "docker-manifest", "docker-list"]

pytestmark = STORE_PAIRS  # the registry core on each pair of stores


async def build(api, repository: str, kind: str) -> tuple[bytes, str]:
    """Push everything `kind` needs (blobs, child manifests) except the manifest itself: (body, media type)."""
    if kind in ("oci-manifest", "docker-manifest"):
        docker = kind == "docker-manifest"
        config, layer = json.dumps({"os": "linux", "n": os.urandom(4).hex()}).encode(), os.urandom(2048)
        await push_blob(api, repository, config)
        await push_blob(api, repository, layer)
        return image_manifest(config, [layer], docker=docker), DOCKER_MANIFEST if docker else OCI_MANIFEST
    docker = kind == "docker-list"
    children = []
    for _ in range(2):
        body, digest = await push_image(api, repository, None, layers=1, docker=docker)
        children.append(body)
    return index_manifest(children, docker=docker), DOCKER_LIST if docker else OCI_INDEX


def put(api, repository: str, reference: str, body, media_type: str | None):
    headers = {"Content-Type": media_type} if media_type else {}
    return api.request("PUT", f"/v2/{repository}/manifests/{reference}", data=body, headers=headers)


async def manifest_status(api, repository: str, reference: str) -> int:
    async with api.request("GET", f"/v2/{repository}/manifests/{reference}") as response:
        if response.status == 404:
            await expect_oci_error(response, 404, "MANIFEST_UNKNOWN")
        return response.status


async def tags(api, repository: str) -> list[str]:
    async with api.request("GET", f"/v2/{repository}/tags/list") as response:
        assert response.status == 200, await response.text()
        return (await response.json())["tags"]


# --- end-7 and end-3 for every manifest kind --------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_put_by_tag_is_201_with_location_and_docker_content_digest(api, kind):
    body, media_type = await build(api, "library/app", kind)
    async with put(api, "library/app", "v1", body, media_type) as response:
        assert response.status == 201, await response.text()
        assert response.headers["Docker-Content-Digest"] == sha256(body)
        assert response.headers["Location"].endswith(f"/v2/library/app/manifests/{sha256(body)}")
        assert "OCI-Subject" not in response.headers


@pytest.mark.parametrize("kind", KINDS)
async def test_get_by_tag_and_by_digest_returns_the_pushed_bytes_and_media_type(api, kind):
    body, media_type = await build(api, "library/app", kind)
    await push_manifest(api, "library/app", "v1", body, media_type)
    for reference in ("v1", sha256(body)):
        async with api.request("GET", f"/v2/library/app/manifests/{reference}") as response:
            assert response.status == 200
            assert await response.read() == body
            assert response.headers["Content-Type"] == media_type
            assert response.headers["Docker-Content-Digest"] == sha256(body)


@pytest.mark.parametrize("kind", KINDS)
async def test_head_gives_media_type_digest_and_length_without_a_body(api, kind):
    body, media_type = await build(api, "app", kind)
    await push_manifest(api, "app", "v1", body, media_type)
    for reference in ("v1", sha256(body)):
        async with api.request("HEAD", f"/v2/app/manifests/{reference}") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == media_type
            assert response.headers["Docker-Content-Digest"] == sha256(body)
            assert int(response.headers["Content-Length"]) == len(body)
            assert await response.read() == b""


@pytest.mark.parametrize("kind", KINDS)
async def test_put_by_digest_stores_an_untagged_manifest(api, kind):
    body, media_type = await build(api, "app", kind)
    async with put(api, "app", sha256(body), body, media_type) as response:
        assert response.status == 201, await response.text()
        assert response.headers["Docker-Content-Digest"] == sha256(body)
    async with api.request("GET", f"/v2/app/manifests/{sha256(body)}") as response:
        assert response.status == 200
        assert await response.read() == body
        assert response.headers["Content-Type"] == media_type
    assert await tags(api, "app") == []


async def test_bytes_are_kept_exactly_as_pushed_not_reformatted(api):
    config, layer = b'{"os":"linux"}', os.urandom(100)
    await push_blob(api, "app", config)
    await push_blob(api, "app", layer)
    # Odd key order, odd whitespace, an escaped character and a trailing newline: any re-encoding changes the digest.
    body = (
        '{ "layers" : [ {"size":%d, "digest":"%s","mediaType":"%s"} ],\n\t"schemaVersion":2,'
        '"config":{"mediaType":"%s","size":%d,"digest":"%s"},'
        '"annotations":{"note":"caf\\u00e9 \u2603"}, "mediaType":"%s" }\n'
        % (len(layer), sha256(layer), OCI_LAYER, OCI_CONFIG, len(config), sha256(config), OCI_MANIFEST)
    ).encode()
    headers = await push_manifest(api, "app", "odd", body, OCI_MANIFEST)
    assert headers["Docker-Content-Digest"] == sha256(body)
    async with api.request("GET", "/v2/app/manifests/odd") as response:
        assert await response.read() == body


async def test_a_manifest_without_a_media_type_field_is_served_with_the_pushed_content_type(api):
    config, layer = b'{"os":"linux"}', os.urandom(100)
    await push_blob(api, "app", config)
    await push_blob(api, "app", layer)
    document = json.loads(image_manifest(config, [layer]))
    del document["mediaType"]
    body = json.dumps(document).encode()
    await push_manifest(api, "app", "v1", body, OCI_MANIFEST)
    async with api.request("GET", "/v2/app/manifests/v1") as response:
        assert response.headers["Content-Type"] == OCI_MANIFEST
        assert await response.read() == body


async def test_content_type_that_contradicts_the_media_type_is_manifest_invalid(api):
    body, _ = await build(api, "app", "oci-manifest")
    async with put(api, "app", "v1", body, DOCKER_MANIFEST) as response:
        await expect_oci_error(response, 400, "MANIFEST_INVALID")
    assert await manifest_status(api, "app", "v1") == 404


async def test_pushing_a_tag_again_moves_it_to_the_new_manifest(api):
    first, _ = await push_image(api, "app", "latest")
    second, _ = await push_image(api, "app", "latest")
    async with api.request("GET", "/v2/app/manifests/latest") as response:
        assert await response.read() == second
        assert response.headers["Docker-Content-Digest"] == sha256(second)
    async with api.request("GET", f"/v2/app/manifests/{sha256(first)}") as response:
        assert response.status == 200, "the previous manifest stays reachable by digest"
        assert await response.read() == first


async def test_a_manifest_is_only_visible_in_its_repository(api):
    body, digest = await push_image(api, "one", "v1")
    assert await manifest_status(api, "two", digest) == 404
    assert await manifest_status(api, "two", "v1") == 404


async def test_sha512_digest_reference_is_accepted_and_served(api):
    body, media_type = await build(api, "app", "oci-manifest")
    async with put(api, "app", sha512(body), body, media_type) as response:
        assert response.status == 201, await response.text()
        assert response.headers["Docker-Content-Digest"] == sha512(body)
    async with api.request("GET", f"/v2/app/manifests/{sha512(body)}") as response:
        assert response.status == 200
        assert await response.read() == body
        assert response.headers["Docker-Content-Digest"] == sha512(body)


async def test_if_none_match_with_the_digest_is_304(api):
    body, digest = await push_image(api, "app", "v1")
    async with api.request("GET", "/v2/app/manifests/v1", headers={"If-None-Match": f'"{digest}"'}) as response:
        assert response.status == 304
        assert await response.read() == b""
    async with api.request("GET", "/v2/app/manifests/v1", headers={"If-None-Match": f'"{sha256(b"x")}"'}) as response:
        assert response.status == 200


# --- references must exist ------------------------------------------------------------------------------


async def test_missing_layer_is_manifest_blob_unknown(api):
    config, layer = b'{"os":"linux"}', os.urandom(100)
    await push_blob(api, "app", config)
    async with put(api, "app", "v1", image_manifest(config, [layer]), OCI_MANIFEST) as response:
        error = await expect_oci_error(response, 404, "MANIFEST_BLOB_UNKNOWN")
        assert sha256(layer) in json.dumps(error)
    assert await manifest_status(api, "app", "v1") == 404


async def test_missing_config_is_manifest_blob_unknown(api):
    config, layer = b'{"os":"linux"}', os.urandom(100)
    await push_blob(api, "app", layer)
    async with put(api, "app", "v1", image_manifest(config, [layer], docker=True), DOCKER_MANIFEST) as response:
        error = await expect_oci_error(response, 404, "MANIFEST_BLOB_UNKNOWN")
        assert sha256(config) in json.dumps(error)


async def test_blobs_of_another_repository_do_not_count(api):
    config, layer = b'{"os":"linux"}', os.urandom(100)
    await push_blob(api, "other", config)
    await push_blob(api, "other", layer)
    async with put(api, "app", "v1", image_manifest(config, [layer]), OCI_MANIFEST) as response:
        await expect_oci_error(response, 404, "MANIFEST_BLOB_UNKNOWN")


@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-list"])
async def test_index_referencing_a_missing_manifest_is_manifest_blob_unknown(api, docker):
    present, _ = await push_image(api, "app", None, layers=1, docker=docker)
    absent = image_manifest(b'{"os":"linux"}', [b"never pushed"], docker=docker)
    body = index_manifest([present, absent], docker=docker)
    async with put(api, "app", "multi", body, DOCKER_LIST if docker else OCI_INDEX) as response:
        error = await expect_oci_error(response, 404, "MANIFEST_BLOB_UNKNOWN")
        assert sha256(absent) in json.dumps(error)
        assert sha256(present) not in json.dumps(error)
    assert await manifest_status(api, "app", "multi") == 404


@pytest.mark.parametrize(
    "media_type, layer_type",
    [
        (OCI_MANIFEST, "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"),
        (DOCKER_MANIFEST, "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"),
    ],
)
async def test_non_distributable_layers_may_be_missing(api, media_type, layer_type):
    config, layer, foreign = b'{"os":"windows"}', os.urandom(100), os.urandom(100)
    await push_blob(api, "app", config)
    await push_blob(api, "app", layer)
    config_type = OCI_CONFIG if media_type == OCI_MANIFEST else DOCKER_CONFIG
    ordinary = OCI_LAYER if media_type == OCI_MANIFEST else DOCKER_LAYER
    body = manifest_document(
        media_type,
        descriptor(config_type, config),
        [descriptor(layer_type, foreign, urls=["https://example.invalid/foreign"]), descriptor(ordinary, layer)],
    )
    await push_manifest(api, "app", "win", body, media_type)
    async with api.request("GET", "/v2/app/manifests/win") as response:
        assert await response.read() == body
    # An ordinary layer that is missing is still refused, so the exemption is the media type's.
    missing = manifest_document(media_type, descriptor(config_type, config), [descriptor(ordinary, foreign)])
    async with put(api, "app", "bad", missing, media_type) as response:
        await expect_oci_error(response, 404, "MANIFEST_BLOB_UNKNOWN")


# --- size limit ------------------------------------------------------------------------------------------


def padded_manifest(config: bytes, size: int) -> bytes:
    document = json.loads(image_manifest(config, []))
    document["annotations"] = {"pad": ""}
    base = len(json.dumps(document).encode())
    document["annotations"]["pad"] = "x" * (size - base)
    body = json.dumps(document).encode()
    assert len(body) == size
    return body


async def test_a_manifest_of_exactly_4_mib_is_accepted(api):
    config = b'{"os":"linux"}'
    await push_blob(api, "app", config)
    body = padded_manifest(config, MAX_MANIFEST)
    await push_manifest(api, "app", "big", body, OCI_MANIFEST)
    async with api.request("GET", "/v2/app/manifests/big") as response:
        assert await response.read() == body


async def test_a_manifest_over_4_mib_is_413(api):
    config = b'{"os":"linux"}'
    await push_blob(api, "app", config)
    body = padded_manifest(config, MAX_MANIFEST + 1)
    async with put(api, "app", "big", body, OCI_MANIFEST) as response:
        await expect_oci_error(response, 413, "MANIFEST_INVALID")
    async with put(api, "app", sha256(body), body, OCI_MANIFEST) as response:
        await expect_oci_error(response, 413, "MANIFEST_INVALID")
    assert await manifest_status(api, "app", "big") == 404
    assert await manifest_status(api, "app", sha256(body)) == 404


async def test_a_streamed_manifest_over_4_mib_without_content_length_is_413(api):
    config = b'{"os":"linux"}'
    await push_blob(api, "app", config)
    body = padded_manifest(config, MAX_MANIFEST + 4096)

    async def stream():
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]

    async with put(api, "app", "big", stream(), OCI_MANIFEST) as response:
        await expect_oci_error(response, 413, "MANIFEST_INVALID")
    assert await manifest_status(api, "app", "big") == 404


# --- malformed manifests and references -------------------------------------------------------------------


INVALID_MANIFESTS = {
    "truncated": (b"{not json", OCI_MANIFEST),
    "empty": (b"", OCI_MANIFEST),
    "not-utf8": (b"\xff\xfe{}", OCI_MANIFEST),
    "array": (b"[]", OCI_MANIFEST),
    "schema-1": (json.dumps({"schemaVersion": 1, "mediaType": OCI_MANIFEST, "config": {}, "layers": []}).encode(),
                 OCI_MANIFEST),
    "no-config": (json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode(), OCI_MANIFEST),
    "manifests-not-list": (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": {}}).encode(), OCI_INDEX),
    "unknown-type": (json.dumps({"schemaVersion": 2, "mediaType": "text/plain"}).encode(), "text/plain"),
    "docker-schema-1": (json.dumps({"schemaVersion": 1, "name": "app", "tag": "v1", "fsLayers": []}).encode(),
                        "application/vnd.docker.distribution.manifest.v1+prettyjws"),
    "annotations-not-strings": (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [],
                                            "annotations": {"a": 1}}).encode(), OCI_INDEX),
    "subject-not-descriptor": (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [],
                                           "subject": "sha256:" + "0" * 64}).encode(), OCI_INDEX),
}


async def test_invalid_manifest_is_400_manifest_invalid_and_stores_nothing(api):
    for case, (body, media_type) in INVALID_MANIFESTS.items():
        async with put(api, "app", "bad", body, media_type) as response:
            assert response.status == 400, (case, response.status)
            await expect_oci_error(response, 400, "MANIFEST_INVALID")
    assert await manifest_status(api, "app", "bad") == 404
    assert api.store.events() == []


def test_a_manifest_with_a_key_twice_is_manifest_invalid_at_any_depth(registry):
    """Two parsers must not read two different manifests from one body: a registry that keeps the first of two
    `digest`s and a client that keeps the last (or the other way round) would disagree about what an image is."""
    config, layer, other = b'{"os": "linux"}', os.urandom(2048), os.urandom(2048)
    for blob in (config, layer, other):  # every blob either reading names exists: only the duplicate is wrong
        assert request(f"{registry.url}/v2/app/blobs/uploads/?digest={sha256(blob)}", "POST", blob).status == 201
    body = image_manifest(config, [layer]).decode()
    duplicated = {
        "top level": body.replace('"schemaVersion": 2', '"schemaVersion": 2, "schemaVersion": 2'),
        "in a descriptor": body.replace(f'"digest": "{sha256(layer)}"',
                                        f'"digest": "{sha256(other)}", "digest": "{sha256(layer)}"'),
        "in annotations": body[:-1] + ', "annotations": {"a": "1", "a": "2"}}',
    }
    for case, text in duplicated.items():
        assert text != body, case
        reply = request(f"{registry.url}/v2/app/manifests/v1", "PUT", text.encode(), {"Content-Type": OCI_MANIFEST})
        assert reply.status == 400 and reply.error_code == "MANIFEST_INVALID", (case, reply.status, reply.body)
        assert "twice" in reply.error_message, reply.error_message
    assert request(f"{registry.url}/v2/app/manifests/v1").status == 404
    assert request(f"{registry.url}/v2/app/manifests/v1", "PUT", body.encode(),
                   {"Content-Type": OCI_MANIFEST}).status == 201  # the same manifest with each key once


async def test_deeply_nested_json_is_manifest_invalid_not_a_server_error(api):
    body = b'{"schemaVersion": 2, "annotations": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    async with put(api, "app", "deep", body, OCI_MANIFEST) as response:
        await expect_oci_error(response, 400, "MANIFEST_INVALID")
    assert await manifest_status(api, "app", "deep") == 404


async def test_content_type_parameters_are_ignored_on_put_and_not_served(api):
    body, _ = await build(api, "app", "oci-manifest")
    document = json.loads(body)
    del document["mediaType"]
    bare = json.dumps(document).encode()
    async with put(api, "app", "v1", body, OCI_MANIFEST + "; charset=utf-8") as response:
        assert response.status == 201, await response.text()
    async with put(api, "app", "v2", bare, OCI_MANIFEST + "; charset=utf-8") as response:
        assert response.status == 201, await response.text()
    for tag, expected in (("v1", body), ("v2", bare)):
        async with api.request("GET", f"/v2/app/manifests/{tag}") as response:
            assert response.headers["Content-Type"] == OCI_MANIFEST
            assert await response.read() == expected


async def test_a_descriptor_with_a_malformed_digest_is_manifest_invalid(api):
    config = b'{"os":"linux"}'
    await push_blob(api, "app", config)
    body = manifest_document(
        OCI_MANIFEST,
        descriptor(OCI_CONFIG, config),
        [{"mediaType": OCI_LAYER, "digest": "sha256:1234", "size": 4}],
    )
    async with put(api, "app", "bad", body, OCI_MANIFEST) as response:
        await expect_oci_error(response, 400, "MANIFEST_INVALID")


async def test_digest_reference_not_matching_the_body_is_digest_invalid(api):
    body, media_type = await build(api, "app", "oci-manifest")
    wrong = sha256(body + b" ")
    async with put(api, "app", wrong, body, media_type) as response:
        error = await expect_oci_error(response, 400, "DIGEST_INVALID")
        assert sha256(body) in json.dumps(error)
    assert await manifest_status(api, "app", wrong) == 404
    assert await manifest_status(api, "app", sha256(body)) == 404


async def test_malformed_digest_reference_is_digest_invalid(api):
    body, media_type = await build(api, "app", "oci-manifest")
    async with put(api, "app", "sha256:abc", body, media_type) as response:
        await expect_oci_error(response, 400, "DIGEST_INVALID")


async def test_invalid_tag_is_manifest_invalid_on_put_and_manifest_unknown_on_get(api):
    body, media_type = await build(api, "app", "oci-manifest")
    for tag in (".hidden", "-dash", "t" * 129, "a+b"):
        async with put(api, "app", tag, body, media_type) as response:
            assert response.status == 400, (tag, response.status)
            await expect_oci_error(response, 400, "MANIFEST_INVALID")
        async with api.request("GET", f"/v2/app/manifests/{tag}") as response:
            assert response.status == 404, (tag, response.status)
            await expect_oci_error(response, 404, "MANIFEST_UNKNOWN")
    assert api.store.list_tags("app", None, None) == []


async def test_a_tag_of_128_characters_is_valid(api):
    tag = "T" * 128
    body, digest = await push_image(api, "app", tag)
    async with api.request("GET", f"/v2/app/manifests/{tag}") as response:
        assert response.status == 200
        assert await response.read() == body


# --- subject ------------------------------------------------------------------------------------------------


async def test_a_manifest_whose_subject_does_not_exist_is_accepted_with_oci_subject(api):
    absent_subject = image_manifest(b'{"os":"linux"}', [b"never pushed"])
    config = b"{}"
    await push_blob(api, "app", config)
    body = image_manifest(config, [], subject=absent_subject, artifact_type="application/vnd.example.sig")
    async with put(api, "app", sha256(body), body, OCI_MANIFEST) as response:
        assert response.status == 201, await response.text()
        assert response.headers["OCI-Subject"] == sha256(absent_subject)
    async with api.request("GET", f"/v2/app/manifests/{sha256(body)}") as response:
        assert response.status == 200
        assert await response.read() == body
    assert await manifest_status(api, "app", sha256(absent_subject)) == 404


async def test_an_index_with_a_subject_is_answered_with_oci_subject(api):
    subject, _ = await push_image(api, "app", "v1")
    child, _ = await push_image(api, "app", None, layers=1)
    document = json.loads(index_manifest([child]))
    document["subject"] = descriptor(OCI_MANIFEST, subject)
    document["artifactType"] = "application/vnd.example.bundle"
    body = json.dumps(document).encode()
    async with put(api, "app", sha256(body), body, OCI_INDEX) as response:
        assert response.status == 201, await response.text()
        assert response.headers["OCI-Subject"] == sha256(subject)


# --- end-9: deletes ---------------------------------------------------------------------------------------


async def test_delete_by_digest_removes_the_manifest_and_all_its_tags(api):
    body, digest = await push_image(api, "app", "v1")
    await push_manifest(api, "app", "latest", body)
    other, _ = await push_image(api, "app", "other")
    async with api.request("DELETE", f"/v2/app/manifests/{digest}") as response:
        assert response.status == 202, await response.text()
    for reference in (digest, "v1", "latest"):
        assert await manifest_status(api, "app", reference) == 404
    async with api.request("HEAD", f"/v2/app/manifests/{digest}") as response:
        assert response.status == 404
    assert await tags(api, "app") == ["other"]
    assert await manifest_status(api, "app", "other") == 200


async def test_delete_by_tag_removes_only_the_tag(api):
    body, digest = await push_image(api, "app", "v1")
    await push_manifest(api, "app", "latest", body)
    async with api.request("DELETE", "/v2/app/manifests/v1") as response:
        assert response.status == 202, await response.text()
    assert await manifest_status(api, "app", "v1") == 404
    assert await manifest_status(api, "app", digest) == 200
    assert await manifest_status(api, "app", "latest") == 200
    assert await tags(api, "app") == ["latest"]


async def test_a_deleted_manifest_can_be_pushed_again(api):
    body, digest = await push_image(api, "app", "v1")
    async with api.request("DELETE", f"/v2/app/manifests/{digest}") as response:
        assert response.status == 202
    await push_manifest(api, "app", "v1", body)
    async with api.request("GET", "/v2/app/manifests/v1") as response:
        assert await response.read() == body


async def test_deleting_an_unknown_manifest_or_tag_is_404_manifest_unknown(api):
    await push_image(api, "app", "v1")
    async with api.request("DELETE", "/v2/app/manifests/nope") as response:
        await expect_oci_error(response, 404, "MANIFEST_UNKNOWN")
    async with api.request("DELETE", f"/v2/app/manifests/{sha256(b'nope')}") as response:
        await expect_oci_error(response, 404, "MANIFEST_UNKNOWN")
    async with api.request("DELETE", "/v2/never/pushed/manifests/v1") as response:
        await expect_oci_error(response, 404, "MANIFEST_UNKNOWN")


async def test_deleting_a_manifest_twice_is_manifest_unknown_the_second_time(api):
    _, digest = await push_image(api, "app", "v1")
    async with api.request("DELETE", f"/v2/app/manifests/{digest}") as response:
        assert response.status == 202
    async with api.request("DELETE", f"/v2/app/manifests/{digest}") as response:
        await expect_oci_error(response, 404, "MANIFEST_UNKNOWN")


async def test_deleting_a_manifest_in_one_repository_keeps_it_in_another(api):
    body, digest = await push_image(api, "one", "v1")
    config_and_layers = json.loads(body)
    async with api.request("POST", "/v2/two/blobs/uploads/",
                           params={"mount": config_and_layers["config"]["digest"], "from": "one"}) as response:
        assert response.status == 201
    for layer in config_and_layers["layers"]:
        async with api.request("POST", "/v2/two/blobs/uploads/", params={"mount": layer["digest"], "from": "one"}) as response:
            assert response.status == 201
    await push_manifest(api, "two", "same", body)
    async with api.request("DELETE", f"/v2/one/manifests/{digest}") as response:
        assert response.status == 202
    assert await manifest_status(api, "one", digest) == 404
    async with api.request("GET", f"/v2/two/manifests/{digest}") as response:
        assert response.status == 200
        assert await response.read() == body


# --- unknown manifests ------------------------------------------------------------------------------------


async def test_unknown_manifest_is_404_manifest_unknown(api):
    await push_image(api, "app", "v1")
    for reference in ("v2", sha256(b"unknown"), sha512(b"unknown")):
        async with api.request("GET", f"/v2/app/manifests/{reference}") as response:
            await expect_oci_error(response, 404, "MANIFEST_UNKNOWN")
        async with api.request("HEAD", f"/v2/app/manifests/{reference}") as response:
            assert response.status == 404
    async with api.request("GET", "/v2/never/pushed/manifests/latest") as response:
        await expect_oci_error(response, 404, "MANIFEST_UNKNOWN")
