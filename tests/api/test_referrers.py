"""Referrers (OCI end-12a, end-12b): an image index of the manifests whose subject is a digest."""

from __future__ import annotations

import json

import pytest

from tests.support.oci import (
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    descriptor,
    expect_oci_error,
    image_manifest,
    index_manifest,
    push_blob,
    push_image,
    push_manifest,
    sha256,
)
from tests.support.postgres import both_metadata_backends

pytestmark = both_metadata_backends  # the registry core on each metadata store

SIGNATURE = "application/vnd.example.signature.v1"
SBOM = "application/vnd.example.sbom.v1"


async def push_referrer(api, repository: str, subject: bytes, artifact_type: str | None = None,
                        annotations: dict | None = None, config_type: str = OCI_EMPTY) -> bytes:
    config = b"{}"
    await push_blob(api, repository, config)
    body = image_manifest(config, [], subject=subject, artifact_type=artifact_type, config_type=config_type,
                          annotations=annotations)
    await push_manifest(api, repository, sha256(body), body, OCI_MANIFEST)
    return body


async def referrers(api, repository: str, digest: str, **params) -> tuple[dict, dict]:
    async with api.request("GET", f"/v2/{repository}/referrers/{digest}", params=params) as response:
        assert response.status == 200, await response.text()
        return json.loads(await response.text()), dict(response.headers)


async def test_referrers_index_lists_each_referrer_with_artifact_type_and_annotations(api):
    subject, subject_digest = await push_image(api, "app", "v1")
    signature = await push_referrer(api, "app", subject, SIGNATURE, {"org.example.signer": "alice"})
    sbom = await push_referrer(api, "app", subject, SBOM, {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"})
    index, _ = await referrers(api, "app", subject_digest)
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == OCI_INDEX
    by_digest = {entry["digest"]: entry for entry in index["manifests"]}
    assert by_digest == {
        sha256(signature): {
            "mediaType": OCI_MANIFEST,
            "digest": sha256(signature),
            "size": len(signature),
            "artifactType": SIGNATURE,
            "annotations": {"org.example.signer": "alice"},
        },
        sha256(sbom): {
            "mediaType": OCI_MANIFEST,
            "digest": sha256(sbom),
            "size": len(sbom),
            "artifactType": SBOM,
            "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
        },
    }


async def test_referrers_answer_has_the_oci_index_content_type(api):
    subject, subject_digest = await push_image(api, "app", "v1")
    await push_referrer(api, "app", subject, SIGNATURE)
    for digest in (subject_digest, sha256(b"no such subject")):
        async with api.request("GET", f"/v2/app/referrers/{digest}") as response:
            assert response.status == 200
            # The conformance suite compares the whole header with the media type.
            assert response.headers["Content-Type"] == OCI_INDEX


async def test_artifact_type_falls_back_to_the_config_media_type(api):
    subject, subject_digest = await push_image(api, "app", "v1")
    body = await push_referrer(api, "app", subject, None, config_type=SBOM)
    index, _ = await referrers(api, "app", subject_digest)
    assert [(entry["digest"], entry["artifactType"]) for entry in index["manifests"]] == [(sha256(body), SBOM)]


async def test_an_empty_artifact_type_falls_back_to_the_config_media_type(api):
    """Distribution spec 1.1: no artifactType *or an empty one* -> the config descriptor's mediaType."""
    subject, subject_digest = await push_image(api, "app", "v1")
    config = b"{}"
    await push_blob(api, "app", config)
    document = json.loads(image_manifest(config, [], subject=subject, config_type=SBOM))
    document["artifactType"] = ""
    body = json.dumps(document).encode()
    await push_manifest(api, "app", sha256(body), body, OCI_MANIFEST)
    index, _ = await referrers(api, "app", subject_digest)
    assert [(entry["digest"], entry.get("artifactType")) for entry in index["manifests"]] == [(sha256(body), SBOM)]
    index, _ = await referrers(api, "app", subject_digest, artifactType=SBOM)
    assert [entry["digest"] for entry in index["manifests"]] == [sha256(body)]


async def test_an_index_referrer_without_artifact_type_has_none_in_its_descriptor(api):
    subject, subject_digest = await push_image(api, "app", "v1")
    child, _ = await push_image(api, "app", None, layers=1)
    document = json.loads(index_manifest([child]))
    document["subject"] = descriptor(OCI_MANIFEST, subject)
    body = json.dumps(document).encode()
    await push_manifest(api, "app", sha256(body), body, OCI_INDEX)
    index, _ = await referrers(api, "app", subject_digest)
    assert index["manifests"] == [{"mediaType": OCI_INDEX, "digest": sha256(body), "size": len(body)}]


async def test_artifact_type_filter_keeps_only_matches_and_says_so(api):
    subject, subject_digest = await push_image(api, "app", "v1")
    signature = await push_referrer(api, "app", subject, SIGNATURE)
    await push_referrer(api, "app", subject, SBOM)
    index, headers = await referrers(api, "app", subject_digest, artifactType=SIGNATURE)
    assert [entry["digest"] for entry in index["manifests"]] == [sha256(signature)]
    assert headers["OCI-Filters-Applied"] == "artifactType"


async def test_a_filter_that_matches_nothing_is_an_empty_index_with_the_header(api):
    subject, subject_digest = await push_image(api, "app", "v1")
    await push_referrer(api, "app", subject, SIGNATURE)
    index, headers = await referrers(api, "app", subject_digest, artifactType="application/vnd.example.none")
    assert index["manifests"] == []
    assert headers["OCI-Filters-Applied"] == "artifactType"


async def test_without_a_filter_there_is_no_filters_applied_header(api):
    subject, subject_digest = await push_image(api, "app", "v1")
    await push_referrer(api, "app", subject, SIGNATURE)
    index, headers = await referrers(api, "app", subject_digest)
    assert len(index["manifests"]) == 1
    assert "OCI-Filters-Applied" not in headers


@pytest.mark.parametrize("repository", ["app", "never/pushed"])
async def test_an_unknown_subject_has_an_empty_index(api, repository):
    await push_image(api, "app", "v1")
    index, _ = await referrers(api, repository, sha256(b"unknown subject"))
    assert index == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


async def test_referrers_pushed_before_their_subject_are_listed(api):
    subject = image_manifest(b'{"os":"linux"}', [b"later"])
    signature = await push_referrer(api, "app", subject, SIGNATURE)
    index, _ = await referrers(api, "app", sha256(subject))
    assert [entry["digest"] for entry in index["manifests"]] == [sha256(signature)]


async def test_referrers_of_another_repository_are_not_listed(api):
    subject, subject_digest = await push_image(api, "app", "v1")
    await push_referrer(api, "other", subject, SIGNATURE)
    index, _ = await referrers(api, "app", subject_digest)
    assert index["manifests"] == []


async def test_a_deleted_referrer_leaves_the_index(api):
    subject, subject_digest = await push_image(api, "app", "v1")
    signature = await push_referrer(api, "app", subject, SIGNATURE)
    sbom = await push_referrer(api, "app", subject, SBOM)
    async with api.request("DELETE", f"/v2/app/manifests/{sha256(signature)}") as response:
        assert response.status == 202
    index, _ = await referrers(api, "app", subject_digest)
    assert [entry["digest"] for entry in index["manifests"]] == [sha256(sbom)]


async def test_an_index_can_be_a_referrer(api):
    subject, subject_digest = await push_image(api, "app", "v1")
    child, _ = await push_image(api, "app", None, layers=1)
    document = json.loads(index_manifest([child]))
    document["subject"] = descriptor(OCI_MANIFEST, subject)
    document["artifactType"] = "application/vnd.example.bundle"
    document["annotations"] = {"org.example.kind": "bundle"}
    body = json.dumps(document).encode()
    await push_manifest(api, "app", sha256(body), body, OCI_INDEX)
    index, _ = await referrers(api, "app", subject_digest)
    assert index["manifests"] == [{
        "mediaType": OCI_INDEX,
        "digest": sha256(body),
        "size": len(body),
        "artifactType": "application/vnd.example.bundle",
        "annotations": {"org.example.kind": "bundle"},
    }]


async def test_referrers_of_a_referrer_are_its_own(api):
    subject, subject_digest = await push_image(api, "app", "v1")
    signature = await push_referrer(api, "app", subject, SIGNATURE)
    countersignature = await push_referrer(api, "app", signature, SIGNATURE)
    index, _ = await referrers(api, "app", sha256(signature))
    assert [entry["digest"] for entry in index["manifests"]] == [sha256(countersignature)]
    index, _ = await referrers(api, "app", subject_digest)
    assert [entry["digest"] for entry in index["manifests"]] == [sha256(signature)]


async def test_referrers_of_a_malformed_digest_is_400_digest_invalid(api):
    for digest in ("sha256:abc", "latest", "md5:" + "0" * 32):
        async with api.request("GET", f"/v2/app/referrers/{digest}") as response:
            assert response.status == 400, (digest, response.status)
            await expect_oci_error(response, 400, "DIGEST_INVALID")


async def test_a_subject_descriptor_with_a_malformed_digest_is_manifest_invalid(api):
    config = b"{}"
    await push_blob(api, "app", config)
    document = json.loads(image_manifest(config, []))
    document["subject"] = {"mediaType": OCI_MANIFEST, "digest": "sha256:nothex", "size": 10}
    body = json.dumps(document).encode()
    async with api.request("PUT", f"/v2/app/manifests/{sha256(body)}", data=body,
                           headers={"Content-Type": OCI_MANIFEST}) as response:
        await expect_oci_error(response, 400, "MANIFEST_INVALID")
