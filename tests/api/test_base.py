"""The base endpoint (OCI end-1) and what every /v2 answer shares: the API version header, OCI error
bodies for unknown endpoints (404) and wrong methods (405 UNSUPPORTED), name validation, ReadOnly."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from connected_registry.storage import RegistryStore
from tests.support.oci import (
    OCI_MANIFEST,
    expect_oci_error,
    image_manifest,
    push_blob,
    push_image,
    serve_store,
    sha256,
    start_upload,
)
from tests.support.postgres import both_metadata_backends

pytestmark = both_metadata_backends  # the registry core on each metadata store

VERSION = ("Docker-Distribution-API-Version", "registry/2.0")


@pytest.mark.parametrize("path", ["/v2/", "/v2"])
async def test_base_is_200_with_an_empty_json_object(api, path):
    async with api.request("GET", path) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert json.loads(await response.text()) == {}
        assert response.headers[VERSION[0]] == VERSION[1]


async def test_head_base_is_200(api):
    async with api.request("HEAD", "/v2/") as response:
        assert response.status == 200
        assert response.headers[VERSION[0]] == VERSION[1]


async def test_every_response_carries_the_api_version_header(api):
    """Successes, errors, blob bodies served from disk, ranges, redirects to status: all of them."""
    body, digest = await push_image(api, "app", "v1")
    blob = await push_blob(api, "app", b"0123456789")
    seen: list[tuple[str, str, int]] = []
    missing: list[tuple[str, str, int]] = []

    async def call(method: str, path: str, expected: int, *, url: str | None = None, **kwargs):
        async with api.session.request(method, url or api.url(path), **kwargs) as response:
            await response.read()
            seen.append((method, path or url, response.status))
            assert response.status == expected, (method, path or url, response.status, expected)
            if response.headers.get(VERSION[0]) != VERSION[1]:
                missing.append((method, path or url, response.status))
            return response

    await call("GET", "/v2/", 200)
    await call("HEAD", "/v2/", 200)
    await call("GET", "/v2/_catalog", 200)
    await call("GET", "/v2/app/tags/list", 200)
    await call("GET", "/v2/app/tags/list?n=1", 200)
    await call("GET", "/v2/nobody/tags/list", 404)
    await call("GET", "/v2/app/manifests/v1", 200)
    await call("HEAD", "/v2/app/manifests/v1", 200)
    await call("GET", "/v2/app/manifests/v1", 304, headers={"If-None-Match": f'"{digest}"'})
    await call("GET", "/v2/app/manifests/nope", 404)
    await call("HEAD", "/v2/app/manifests/nope", 404)
    await call("PUT", "/v2/app/manifests/v2", 201, data=body, headers={"Content-Type": OCI_MANIFEST})
    await call("PUT", "/v2/app/manifests/v3", 400, data=b"{", headers={"Content-Type": OCI_MANIFEST})
    await call("GET", f"/v2/app/blobs/{blob}", 200)
    await call("HEAD", f"/v2/app/blobs/{blob}", 200)
    await call("GET", f"/v2/app/blobs/{blob}", 206, headers={"Range": "bytes=2-5"})
    await call("GET", f"/v2/app/blobs/{blob}", 416, headers={"Range": "bytes=50-"})
    await call("GET", f"/v2/app/blobs/{sha256(b'x')}", 404)
    await call("HEAD", f"/v2/app/blobs/{sha256(b'x')}", 404)
    await call("GET", "/v2/app/blobs/sha256:bad", 400)
    upload = (await call("POST", "/v2/app/blobs/uploads/", 202)).headers["Location"]
    await call("PATCH", "", 202, url=upload, data=b"abc")
    await call("GET", "", 204, url=upload)
    await call("PATCH", "", 416, url=upload, data=b"x", headers={"Content-Range": "9-9"})
    await call("PUT", "", 400, url=upload, params={"digest": sha256(b"wrong")})
    upload = (await call("POST", "/v2/app/blobs/uploads/", 202)).headers["Location"]
    await call("PUT", "", 201, url=upload, params={"digest": sha256(b"abc")}, data=b"abc")
    await call("GET", "", 404, url=upload)
    upload = (await call("POST", "/v2/app/blobs/uploads/", 202)).headers["Location"]
    await call("DELETE", "", 204, url=upload)
    await call("POST", f"/v2/other/blobs/uploads/?mount={blob}&from=app", 201)
    await call("POST", f"/v2/app/blobs/uploads/?digest={sha256(b'm')}", 201, data=b"m")
    await call("GET", f"/v2/app/referrers/{digest}", 200)
    await call("GET", f"/v2/app/referrers/{digest}?artifactType=a%2Fb", 200)
    await call("DELETE", "/v2/app/manifests/v2", 202)
    await call("DELETE", f"/v2/app/manifests/{digest}", 202)
    await call("DELETE", f"/v2/app/blobs/{blob}", 202)
    await call("DELETE", f"/v2/app/blobs/{blob}", 404)
    await call("GET", "/v2/app/unknown", 404)
    await call("PATCH", "/v2/app/manifests/v1", 405)
    await call("GET", "/v2/Bad/tags/list", 400)
    await call("GET", "/nothing/here", 404)
    assert len(seen) >= 40
    assert missing == [], f"responses without {VERSION[0]}: {missing}"


# --- unknown endpoints and wrong methods ---------------------------------------------------------------


UNKNOWN_ENDPOINTS = [
    ("GET", "/v2/app/unknown"),
    ("GET", "/v2/app/blobs"),
    ("GET", "/v2/app/manifests"),
    ("GET", "/v2/app/tags"),
    ("GET", "/v2/app/referrers"),
    ("PUT", "/v2/app/manifests/v1/extra"),
    ("GET", "/v2/_catalog/extra"),
    ("GET", "/v3/"),
    ("GET", "/nothing"),
]


async def test_unknown_endpoint_is_404_with_an_oci_error_body(api):
    for method, path in UNKNOWN_ENDPOINTS:
        async with api.request(method, path) as response:
            assert response.status == 404, (method, path, response.status)
            await expect_oci_error(response, 404, "UNSUPPORTED")


WRONG_METHODS = [
    ("POST", "/v2/app/manifests/v1", {"GET", "HEAD", "PUT", "DELETE"}),
    ("PATCH", "/v2/app/manifests/v1", {"GET", "HEAD", "PUT", "DELETE"}),
    ("PUT", f"/v2/app/blobs/{sha256(b'x')}", {"GET", "HEAD", "DELETE"}),
    ("POST", f"/v2/app/blobs/{sha256(b'x')}", {"GET", "HEAD", "DELETE"}),
    ("GET", "/v2/app/blobs/uploads/", {"POST"}),
    ("DELETE", "/v2/app/blobs/uploads/", {"POST"}),
    ("POST", "/v2/app/blobs/uploads/00000000-0000-4000-8000-000000000000", {"GET", "PATCH", "PUT", "DELETE"}),
    ("POST", "/v2/app/tags/list", {"GET"}),
    ("DELETE", "/v2/app/tags/list", {"GET"}),
    ("DELETE", f"/v2/app/referrers/{sha256(b'x')}", {"GET"}),
]


async def test_wrong_method_is_405_unsupported_with_allow(api):
    for method, path, allowed in WRONG_METHODS:
        async with api.request(method, path) as response:
            assert response.status == 405, (method, path, response.status)
            await expect_oci_error(response, 405, "UNSUPPORTED")
            assert {part.strip() for part in response.headers["Allow"].split(",")} == allowed, (method, path)


async def test_wrong_method_on_base_and_catalog_is_405_unsupported(api):
    for method, path in (("DELETE", "/v2/"), ("POST", "/v2/"), ("PUT", "/v2/_catalog"), ("DELETE", "/v2/_catalog")):
        async with api.request(method, path) as response:
            assert response.status == 405, (method, path, response.status)
            await expect_oci_error(response, 405, "UNSUPPORTED")


async def test_a_wrong_method_changes_nothing(api):
    body, digest = await push_image(api, "app", "v1")
    async with api.request("POST", "/v2/app/manifests/v1", data=b"{}") as response:
        await expect_oci_error(response, 405, "UNSUPPORTED")
    async with api.request("PUT", f"/v2/app/blobs/{sha256(b'x')}", data=b"x") as response:
        await expect_oci_error(response, 405, "UNSUPPORTED")
    async with api.request("GET", "/v2/app/manifests/v1") as response:
        assert await response.read() == body
    async with api.request("GET", f"/v2/app/blobs/{sha256(b'x')}") as response:
        await expect_oci_error(response, 404, "BLOB_UNKNOWN")


# --- repository names -------------------------------------------------------------------------------------


NAMED_ENDPOINTS = [
    ("GET", "/tags/list"),
    ("GET", "/manifests/latest"),
    ("PUT", "/manifests/latest"),
    ("DELETE", "/manifests/latest"),
    ("GET", f"/blobs/{sha256(b'x')}"),
    ("DELETE", f"/blobs/{sha256(b'x')}"),
    ("POST", "/blobs/uploads/"),
    ("GET", "/blobs/uploads/00000000-0000-4000-8000-000000000000"),
    ("GET", f"/referrers/{sha256(b'x')}"),
]


async def test_invalid_repository_name_is_400_name_invalid_on_every_endpoint(api):
    for method, suffix in NAMED_ENDPOINTS:
        for name in ("UPPER", "a//b", "-lead", "trail-", "a..b", "a/.b", "x" * 256):
            async with api.request(method, f"/v2/{name}{suffix}", data=b"{}") as response:
                assert response.status == 400, (method, name[:20], suffix, await response.text())
                await expect_oci_error(response, 400, "NAME_INVALID")
    assert api.store.list_repositories(None, None) == []


async def test_names_with_many_components_and_separators_are_valid(api):
    name = "a0/b-c/d__e/f.g/h---i"
    body, digest = await push_image(api, name, "v1")
    async with api.request("GET", f"/v2/{name}/manifests/v1") as response:
        assert response.status == 200
        assert await response.read() == body


async def test_repository_names_that_contain_endpoint_words_route_correctly(api):
    for name in ("blobs", "x/manifests", "y/blobs/uploads", "z/tags", "w/referrers"):
        body, digest = await push_image(api, name, "v1")
        async with api.request("GET", f"/v2/{name}/manifests/v1") as response:
            assert response.status == 200, (name, await response.text())
            assert await response.read() == body
        async with api.request("GET", f"/v2/{name}/tags/list") as response:
            assert (await response.json())["tags"] == ["v1"], name
        layer = json.loads(body)["layers"][0]["digest"]
        async with api.request("HEAD", f"/v2/{name}/blobs/{layer}") as response:
            assert response.status == 200, name
        location = await start_upload(api, name)
        assert urlsplit(location).path.startswith(f"/v2/{name}/blobs/uploads/")
        async with api.session.get(location) as response:
            assert response.status == 204, name


# --- ReadOnly instances -------------------------------------------------------------------------------------


async def test_a_read_only_instance_serves_reads_and_refuses_writes(tmp_path: Path):
    data_dir = str(tmp_path / "data")
    async with RegistryStore(data_dir) as store:
        async with serve_store(store) as api:
            body, digest = await push_image(api, "app", "v1")
            blob = json.loads(body)["layers"][0]["digest"]
            upload = await start_upload(api, "app")
    async with RegistryStore(data_dir) as store:
        async with serve_store(store, mode="ReadOnly") as api:
            async with api.request("GET", "/v2/app/manifests/v1") as response:
                assert await response.read() == body
            async with api.request("GET", f"/v2/app/blobs/{blob}") as response:
                assert response.status == 200
            async with api.request("GET", "/v2/app/tags/list") as response:
                assert response.status == 200
            config = b"{}"
            async with api.request("POST", "/v2/app/blobs/uploads/") as response:
                await expect_oci_error(response, 403, "DENIED")
            async with api.request("POST", "/v2/app/blobs/uploads/", params={"digest": sha256(config)}, data=config) as response:
                await expect_oci_error(response, 403, "DENIED")
            async with api.request("PATCH", urlsplit(upload).path, data=b"x") as response:
                await expect_oci_error(response, 403, "DENIED")
            async with api.request("PUT", "/v2/app/manifests/v2", data=image_manifest(config, []),
                                   headers={"Content-Type": OCI_MANIFEST}) as response:
                await expect_oci_error(response, 403, "DENIED")
            for path in ("/v2/app/manifests/v1", f"/v2/app/manifests/{digest}", f"/v2/app/blobs/{blob}"):
                async with api.request("DELETE", path) as response:
                    await expect_oci_error(response, 405, "UNSUPPORTED")
            async with api.request("GET", "/v2/app/manifests/v1") as response:
                assert response.status == 200, "nothing was deleted"
            assert [event["type"] for event in store.events()] == ["ManifestPut", "TagSet"]


# --- health ------------------------------------------------------------------------------------------------


async def test_healthz_and_readyz_answer_200(api):
    async with api.request("GET", "/healthz") as response:
        assert response.status == 200
    async with api.request("GET", "/readyz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ready"
