"""Blobs (OCI end-2, end-10): GET and HEAD, Range (206 and 416), DELETE, BLOB_UNKNOWN, sha256 and sha512."""

from __future__ import annotations

import os

import pytest

from tests.support.azurite import STORE_PAIRS
from tests.support.oci import expect_oci_error, push_blob, sha256, sha512, start_upload

pytestmark = STORE_PAIRS  # the registry core on each pair of stores

DATA = bytes(range(256)) * 4  # 1024 bytes whose every offset is recognisable


async def push_sha512_blob(api, repository: str, data: bytes) -> str:
    digest = sha512(data)
    async with api.request("POST", f"/v2/{repository}/blobs/uploads/", params={"digest": digest}, data=data) as response:
        assert response.status == 201, await response.text()
    return digest


async def test_get_blob_returns_its_bytes_with_docker_content_digest(api):
    digest = await push_blob(api, "library/app", DATA)
    async with api.request("GET", f"/v2/library/app/blobs/{digest}") as response:
        assert response.status == 200
        assert await response.read() == DATA
        assert response.headers["Docker-Content-Digest"] == digest
        assert int(response.headers["Content-Length"]) == len(DATA)


async def test_head_blob_gives_length_and_digest_without_a_body(api):
    digest = await push_blob(api, "library/app", DATA)
    async with api.request("HEAD", f"/v2/library/app/blobs/{digest}") as response:
        assert response.status == 200
        assert response.headers["Docker-Content-Digest"] == digest
        assert int(response.headers["Content-Length"]) == len(DATA)
        assert await response.read() == b""


@pytest.mark.parametrize(
    "range_header, start, end",
    [("bytes=10-19", 10, 19), ("bytes=1000-", 1000, 1023), ("bytes=-24", 1000, 1023), ("bytes=0-0", 0, 0)],
)
async def test_range_request_is_206_with_exactly_the_requested_bytes(api, range_header, start, end):
    digest = await push_blob(api, "app", DATA)
    async with api.request("GET", f"/v2/app/blobs/{digest}", headers={"Range": range_header}) as response:
        assert response.status == 206
        assert await response.read() == DATA[start : end + 1]
        assert response.headers["Content-Range"] == f"bytes {start}-{end}/{len(DATA)}"
        assert response.headers["Docker-Content-Digest"] == digest


async def test_range_past_the_end_is_416_with_the_blob_size(api):
    digest = await push_blob(api, "app", DATA)
    async with api.request("GET", f"/v2/app/blobs/{digest}", headers={"Range": f"bytes={len(DATA)}-"}) as response:
        assert response.status == 416
        assert response.headers["Content-Range"] == f"bytes */{len(DATA)}"


async def test_blobs_advertise_byte_ranges(api):
    digest = await push_blob(api, "app", DATA)
    async with api.request("HEAD", f"/v2/app/blobs/{digest}") as response:
        assert response.headers.get("Accept-Ranges") == "bytes"


async def test_unknown_blob_is_404_blob_unknown(api):
    await push_blob(api, "app", DATA)
    async with api.request("GET", f"/v2/app/blobs/{sha256(b'never pushed')}") as response:
        await expect_oci_error(response, 404, "BLOB_UNKNOWN")
    async with api.request("HEAD", f"/v2/app/blobs/{sha256(b'never pushed')}") as response:
        assert response.status == 404


async def test_blob_of_another_repository_is_blob_unknown_here(api):
    digest = await push_blob(api, "team-a/app", DATA)
    async with api.request("GET", f"/v2/team-b/app/blobs/{digest}") as response:
        await expect_oci_error(response, 404, "BLOB_UNKNOWN")


async def test_blob_in_a_repository_that_does_not_exist_is_404(api):
    async with api.request("GET", f"/v2/no/such/repo/blobs/{sha256(DATA)}") as response:
        error = await expect_oci_error(response, 404, "BLOB_UNKNOWN")
        assert "no/such/repo" in error["message"]


async def test_malformed_blob_digest_is_400_digest_invalid(api):
    for digest in ("sha256:abc", "sha256:" + "G" * 64, "md5:d41d8cd98f00b204e9800998ecf8427e", "sha256" + "0" * 64):
        for method in ("GET", "DELETE"):
            async with api.request(method, f"/v2/app/blobs/{digest}") as response:
                assert response.status == 400, (method, digest, response.status)
                await expect_oci_error(response, 400, "DIGEST_INVALID")


async def test_delete_blob_is_202_and_then_blob_unknown(api):
    digest = await push_blob(api, "app", DATA)
    async with api.request("DELETE", f"/v2/app/blobs/{digest}") as response:
        assert response.status == 202, await response.text()
        assert response.headers["Docker-Content-Digest"] == digest
    async with api.request("GET", f"/v2/app/blobs/{digest}") as response:
        await expect_oci_error(response, 404, "BLOB_UNKNOWN")
    async with api.request("HEAD", f"/v2/app/blobs/{digest}") as response:
        assert response.status == 404


async def test_deleting_an_unknown_blob_is_404_blob_unknown(api):
    digest = await push_blob(api, "app", DATA)
    async with api.request("DELETE", f"/v2/app/blobs/{digest}") as response:
        assert response.status == 202
    async with api.request("DELETE", f"/v2/app/blobs/{digest}") as response:
        await expect_oci_error(response, 404, "BLOB_UNKNOWN")
    async with api.request("DELETE", f"/v2/app/blobs/{sha256(b'never pushed')}") as response:
        await expect_oci_error(response, 404, "BLOB_UNKNOWN")


async def test_deleting_a_blob_in_one_repository_keeps_it_in_another(api):
    digest = await push_blob(api, "one", DATA)
    await push_blob(api, "two", DATA)
    async with api.request("DELETE", f"/v2/one/blobs/{digest}") as response:
        assert response.status == 202
    async with api.request("GET", f"/v2/one/blobs/{digest}") as response:
        await expect_oci_error(response, 404, "BLOB_UNKNOWN")
    async with api.request("GET", f"/v2/two/blobs/{digest}") as response:
        assert response.status == 200
        assert await response.read() == DATA


async def test_sha512_blob_is_served_by_its_sha512_digest(api):
    data = os.urandom(5000)
    digest = await push_sha512_blob(api, "app", data)
    async with api.request("GET", f"/v2/app/blobs/{digest}") as response:
        assert response.status == 200
        assert await response.read() == data
        assert response.headers["Docker-Content-Digest"] == digest
    async with api.request("HEAD", f"/v2/app/blobs/{digest}") as response:
        assert response.status == 200
        assert int(response.headers["Content-Length"]) == len(data)
    async with api.request("GET", f"/v2/app/blobs/{digest}", headers={"Range": "bytes=100-199"}) as response:
        assert response.status == 206
        assert await response.read() == data[100:200]
    # The same bytes under their sha256 digest were never pushed.
    async with api.request("GET", f"/v2/app/blobs/{sha256(data)}") as response:
        await expect_oci_error(response, 404, "BLOB_UNKNOWN")


async def test_sha512_blob_can_be_deleted(api):
    digest = await push_sha512_blob(api, "app", DATA)
    async with api.request("DELETE", f"/v2/app/blobs/{digest}") as response:
        assert response.status == 202
    async with api.request("GET", f"/v2/app/blobs/{digest}") as response:
        await expect_oci_error(response, 404, "BLOB_UNKNOWN")


async def test_an_unfinished_upload_is_not_a_blob(api):
    location = await start_upload(api, "app")
    async with api.session.patch(location, data=DATA) as response:
        assert response.status == 202
    async with api.request("GET", f"/v2/app/blobs/{sha256(DATA)}") as response:
        await expect_oci_error(response, 404, "BLOB_UNKNOWN")


async def test_large_blob_is_served_whole_and_by_range(api):
    data = os.urandom((3 << 20) + 17)
    digest = await push_blob(api, "app", data)
    async with api.request("GET", f"/v2/app/blobs/{digest}") as response:
        assert response.status == 200
        assert await response.read() == data
    start = (2 << 20) - 5
    async with api.request("GET", f"/v2/app/blobs/{digest}", headers={"Range": f"bytes={start}-"}) as response:
        assert response.status == 206
        assert await response.read() == data[start:]
