"""Which entries of an image index a site that runs only some platforms leaves out (issue 16), read from the
index bytes as the registry parses them."""

from __future__ import annotations

import json

import pytest

from connected_registry.oci.manifest import parse_manifest
from connected_registry.oci.platforms import Platform, kept_by_platform, left_out, parse_platform
from tests.support.oci import OCI_INDEX, OCI_MANIFEST

AMD64, ARM64, ARMV7, ARMV6 = ("sha256:" + c * 64 for c in "abcd")
ATTEST_AMD64, ATTEST_ARM64, ARTIFACT, NESTED = ("sha256:" + c * 64 for c in "1234")


def entry(digest: str, platform: dict | None = None, annotations: dict | None = None,
          media_type: str = OCI_MANIFEST) -> dict:
    document = {"mediaType": media_type, "digest": digest, "size": 100}
    if platform is not None:
        document["platform"] = platform
    if annotations is not None:
        document["annotations"] = annotations
    return document


def attestation(digest: str, about: str) -> dict:
    return entry(digest, {"os": "unknown", "architecture": "unknown"},
                 {"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": about})


BUILDX_INDEX = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
    entry(AMD64, {"os": "linux", "architecture": "amd64"}),
    entry(ARM64, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
    entry(ARMV7, {"os": "linux", "architecture": "arm", "variant": "v7"}),
    entry(ARMV6, {"os": "linux", "architecture": "arm", "variant": "v6"}),
    attestation(ATTEST_AMD64, AMD64),
    attestation(ATTEST_ARM64, ARM64),
    entry(ARTIFACT),
    entry(NESTED, media_type=OCI_INDEX),
]}).encode()


def entries():
    return parse_manifest(BUILDX_INDEX, OCI_INDEX).manifests


def wanted(*platforms: str) -> list[Platform]:
    return [parse_platform(platform) for platform in platforms]


def test_arm64_leaves_out_the_other_platforms_and_their_attestations_only():
    assert left_out(entries(), wanted("linux/arm64")) == {AMD64, ARMV7, ARMV6, ATTEST_AMD64}


def test_a_variant_chooses_among_the_variants_and_none_takes_them_all():
    assert left_out(entries(), wanted("linux/arm/v7")) == {AMD64, ARM64, ARMV6, ATTEST_AMD64, ATTEST_ARM64}
    assert left_out(entries(), wanted("linux/arm")) == {AMD64, ARM64, ATTEST_AMD64, ATTEST_ARM64}
    assert left_out(entries(), wanted("linux/arm64/v8", "linux/amd64")) == {ARMV7, ARMV6}


def test_absent_setting_keeps_everything():
    assert left_out(entries(), None) == set()
    assert kept_by_platform(entries(), None) == {AMD64, ARM64, ARMV7, ARMV6}


def test_an_entry_without_its_variant_takes_the_default_one():
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        entry(ARM64, {"os": "linux", "architecture": "arm64"}),
        entry(ARMV7, {"os": "linux", "architecture": "arm"})]}).encode()
    children = parse_manifest(index, OCI_INDEX).manifests
    assert left_out(children, wanted("linux/arm64/v8", "linux/arm/v7")) == set()
    assert left_out(children, wanted("linux/arm/v6")) == {ARM64, ARMV7}


def test_a_digest_one_entry_keeps_is_kept():
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        entry(AMD64, {"os": "linux", "architecture": "amd64"}),
        entry(AMD64, {"os": "linux", "architecture": "arm64"})]}).encode()
    assert left_out(parse_manifest(index, OCI_INDEX).manifests, wanted("linux/arm64")) == set()


def test_malformed_platform_objects_are_no_platform_and_the_index_still_parses():
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        entry(AMD64, {"os": 1, "architecture": "amd64"}), entry(ARM64, "linux/arm64")]}).encode()
    children = parse_manifest(index, OCI_INDEX).manifests
    assert [child.platform for child in children] == [None, None]
    assert left_out(children, wanted("linux/arm64")) == set()


@pytest.mark.parametrize("text,expected", [
    ("linux/arm64", Platform("linux", "arm64")),
    ("linux/arm/v7", Platform("linux", "arm", "v7")),
    ("windows/amd64", Platform("windows", "amd64")),
])
def test_platform_strings(text, expected):
    assert parse_platform(text) == expected and str(expected) == text


@pytest.mark.parametrize("text", ["linux", "linux/", "/arm64", "Linux/arm64", "linux/arm/v7/x", "linux arm64", ""])
def test_bad_platform_strings_say_how_to_write_one(text):
    with pytest.raises(ValueError, match="os/architecture"):
        parse_platform(text)
