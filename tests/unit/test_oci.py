"""Pure OCI logic: digests, names and tags, manifest parsing."""

from __future__ import annotations

import json

import pytest

from connected_registry.oci.digest import digest_of, is_digest, parse_digest
from connected_registry.oci.errors import OciError
from connected_registry.oci.manifest import OCI_INDEX, OCI_MANIFEST, parse_manifest
from connected_registry.oci.names import is_tag, validate_name
from tests.support.oci import image_manifest, index_manifest


@pytest.mark.parametrize("value", ["sha256:" + "a" * 64, "sha512:" + "0" * 128])
def test_valid_digests_parse(value):
    assert str(parse_digest(value)) == value
    assert is_digest(value)


@pytest.mark.parametrize(
    "value",
    ["sha256:" + "a" * 63, "sha256:" + "A" * 64, "sha512:" + "a" * 64, "md5:" + "a" * 32, "sha256", "", "sha256:../x"],
)
def test_malformed_digests_are_digest_invalid(value):
    with pytest.raises(OciError) as raised:
        parse_digest(value)
    assert raised.value.code == "DIGEST_INVALID" and raised.value.status == 400


def test_unknown_algorithm_is_named_in_the_message():
    with pytest.raises(OciError, match="md5"):
        parse_digest("md5:" + "a" * 32)


def test_digest_of_supports_sha512():
    assert digest_of(b"x", "sha512").startswith("sha512:") and len(digest_of(b"x", "sha512")) == 7 + 128


@pytest.mark.parametrize("name", ["a", "library/alpine", "a.b_c__d---e/f", "x" * 255, "0/1/2"])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "a/../b", "..", "a//b", "/a", "a/", "a b", "a" * 256, "_a", "a-", "é"])
def test_invalid_names_are_name_invalid(name):
    with pytest.raises(OciError) as raised:
        validate_name(name)
    assert raised.value.code == "NAME_INVALID"


@pytest.mark.parametrize("tag,valid", [("v1", True), ("_x", True), ("a" * 128, True), ("a" * 129, False),
                                       (".x", False), ("-x", False), ("a/b", False), ("", False)])
def test_tags(tag, valid):
    assert is_tag(tag) is valid


def test_image_manifest_lists_config_and_layers_and_artifact_type():
    body = image_manifest(b"{}", [b"layer"], artifact_type="application/vnd.example.sig", subject=b"{}")
    parsed = parse_manifest(body, OCI_MANIFEST)
    assert parsed.media_type == OCI_MANIFEST
    assert [blob.size for blob in parsed.blobs] == [2, 5]
    assert parsed.artifact_type == "application/vnd.example.sig"
    assert parsed.subject and parsed.subject.startswith("sha256:")


def test_non_distributable_layers_need_not_exist():
    document = json.loads(image_manifest(b"{}", [b"a"]))
    document["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    parsed = parse_manifest(json.dumps(document).encode(), OCI_MANIFEST)
    assert len(parsed.blobs) == 1  # only the config


def test_index_lists_its_manifests():
    parsed = parse_manifest(index_manifest([b"{}", b"[]"]), OCI_INDEX)
    assert parsed.media_type == OCI_INDEX and len(parsed.manifests) == 2 and parsed.blobs == []


@pytest.mark.parametrize(
    "body,content_type",
    [
        (b"not json", OCI_MANIFEST),
        (b"[]", OCI_MANIFEST),
        (b'{"schemaVersion": 1, "mediaType": "application/vnd.oci.image.manifest.v1+json"}', OCI_MANIFEST),
        (b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {}, "layers": []}', OCI_MANIFEST),
        (b'{"schemaVersion": 2, "mediaType": "text/plain"}', "text/plain"),
        (b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": {}}', OCI_INDEX),
    ],
)
def test_malformed_manifests_are_manifest_invalid(body, content_type):
    with pytest.raises(OciError) as raised:
        parse_manifest(body, content_type)
    assert raised.value.code == "MANIFEST_INVALID"


def test_content_type_must_agree_with_media_type():
    with pytest.raises(OciError, match="does not match"):
        parse_manifest(image_manifest(b"{}", []), OCI_INDEX)
