"""Blob uploads (OCI end-4a, end-4b, end-5, end-6, end-11, end-13 and cancel).

Monolithic POST+PUT and POST ?digest=, chunked PATCH with and without Content-Range, out-of-order
chunks (416 with the Range the server has), status, cancel, digest errors, cross-repository mount,
sha512, and sessions that survive an interrupted request and a restart of the store.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

from connected_registry.storage import RegistryStore
from tests.support.azurite import STORE_PAIRS
from tests.support.oci import expect_oci_error, push_blob, serve_store, sha256, sha512, start_upload

pytestmark = STORE_PAIRS  # the registry core on each pair of stores

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


async def blob_bytes(api, repository: str, digest: str) -> bytes | None:
    async with api.request("GET", f"/v2/{repository}/blobs/{digest}") as response:
        if response.status == 404:
            await expect_oci_error(response, 404, "BLOB_UNKNOWN")
            return None
        assert response.status == 200, await response.text()
        assert response.headers["Docker-Content-Digest"] == digest
        return await response.read()


async def upload_range(api, location: str) -> str:
    async with api.session.get(location) as response:
        assert response.status == 204, await response.text()
        return response.headers["Range"]


# --- end-4a: POST starts a session ----------------------------------------------------------------


async def test_post_starts_an_upload_with_202_location_range_and_uuid(api):
    async with api.request("POST", "/v2/library/app/blobs/uploads/") as response:
        assert response.status == 202, await response.text()
        location = response.headers["Location"]
        upload_id = response.headers["Docker-Upload-UUID"]
        assert response.headers["Range"] == "0-0"
    assert UUID.match(upload_id)
    assert urlsplit(location).path == f"/v2/library/app/blobs/uploads/{upload_id}"
    # The Location is usable as given.
    async with api.session.get(location) as response:
        assert response.status == 204
        assert response.headers["Docker-Upload-UUID"] == upload_id


async def test_each_post_starts_a_distinct_session(api):
    first, second = await start_upload(api, "app"), await start_upload(api, "app")
    assert first != second


async def test_post_without_trailing_slash_also_starts_an_upload(api):
    async with api.request("POST", "/v2/app/blobs/uploads") as response:
        assert response.status == 202
        assert UUID.match(response.headers["Docker-Upload-UUID"])


async def test_location_follows_the_forwarded_host_and_scheme(api):
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "registry.example:8443"}
    async with api.request("POST", "/v2/app/blobs/uploads/", headers=headers) as response:
        assert response.status == 202
        assert response.headers["Location"].startswith("https://registry.example:8443/v2/app/blobs/uploads/")


# --- end-4a + end-6: monolithic POST then PUT with the body ----------------------------------------


async def test_put_with_the_whole_body_completes_the_upload_with_201(api):
    data = os.urandom(70_000)
    digest = sha256(data)
    location = await start_upload(api, "app")
    async with api.session.put(location, params={"digest": digest}, data=data) as response:
        assert response.status == 201, await response.text()
        assert response.headers["Docker-Content-Digest"] == digest
        assert urlsplit(response.headers["Location"]).path == f"/v2/app/blobs/{digest}"
    assert await blob_bytes(api, "app", digest) == data


async def test_a_finished_upload_session_is_gone(api):
    data = b"finished"
    location = await start_upload(api, "app")
    async with api.session.put(location, params={"digest": sha256(data)}, data=data) as response:
        assert response.status == 201
    async with api.session.get(location) as response:
        await expect_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN")
    async with api.session.patch(location, data=b"more") as response:
        await expect_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN")


async def test_pushing_a_blob_that_already_exists_succeeds_again(api):
    data = os.urandom(1000)
    digest = await push_blob(api, "app", data)
    assert await push_blob(api, "app", data) == digest
    assert await blob_bytes(api, "app", digest) == data


async def test_empty_blob_can_be_pushed(api):
    location = await start_upload(api, "app")
    async with api.session.put(location, params={"digest": sha256(b"")}) as response:
        assert response.status == 201, await response.text()
    assert await blob_bytes(api, "app", sha256(b"")) == b""


# --- end-4b: POST ?digest= monolithic ---------------------------------------------------------------


async def test_post_with_digest_stores_the_blob_in_one_request(api):
    data = os.urandom(40_000)
    digest = sha256(data)
    async with api.request("POST", "/v2/app/blobs/uploads/", params={"digest": digest}, data=data) as response:
        assert response.status == 201, await response.text()
        assert response.headers["Docker-Content-Digest"] == digest
        assert urlsplit(response.headers["Location"]).path == f"/v2/app/blobs/{digest}"
    assert await blob_bytes(api, "app", digest) == data


async def test_post_with_a_wrong_digest_is_digest_invalid_and_stores_nothing(api):
    data = os.urandom(1000)
    wrong = sha256(b"something else")
    async with api.request("POST", "/v2/app/blobs/uploads/", params={"digest": wrong}, data=data) as response:
        error = await expect_oci_error(response, 400, "DIGEST_INVALID")
        assert sha256(data) in error["message"]
    assert await blob_bytes(api, "app", wrong) is None
    assert await blob_bytes(api, "app", sha256(data)) is None


async def test_post_with_a_malformed_digest_is_digest_invalid(api):
    async with api.request("POST", "/v2/app/blobs/uploads/", params={"digest": "sha256:nothex"}, data=b"x") as response:
        await expect_oci_error(response, 400, "DIGEST_INVALID")


# --- end-5: chunked PATCH ---------------------------------------------------------------------------


async def test_chunked_patches_with_content_range_then_put_complete_the_blob(api):
    data = os.urandom(300_000)
    chunks = [data[:100_000], data[100_000:250_000], data[250_000:]]
    location = await start_upload(api, "app")
    offset = 0
    for chunk in chunks:
        headers = {"Content-Range": f"{offset}-{offset + len(chunk) - 1}", "Content-Type": "application/octet-stream"}
        async with api.session.patch(location, data=chunk, headers=headers) as response:
            assert response.status == 202, await response.text()
            offset += len(chunk)
            assert response.headers["Range"] == f"0-{offset - 1}"
            assert UUID.match(response.headers["Docker-Upload-UUID"])
            location = response.headers["Location"]
    async with api.session.put(location, params={"digest": sha256(data)}) as response:
        assert response.status == 201, await response.text()
    assert await blob_bytes(api, "app", sha256(data)) == data


async def test_streamed_patch_without_content_range_appends(api):
    data = os.urandom((2 << 20) + 3)
    location = await start_upload(api, "app")

    async def stream():
        for start in range(0, len(data), 300_000):
            yield data[start : start + 300_000]

    async with api.session.patch(location, data=stream()) as response:  # chunked transfer, no Content-Length
        assert response.status == 202, await response.text()
        assert response.headers["Range"] == f"0-{len(data) - 1}"
    async with api.session.patch(location, data=b"tail") as response:  # another chunk, no Content-Range
        assert response.status == 202
        assert response.headers["Range"] == f"0-{len(data) + 3}"
    async with api.session.put(location, params={"digest": sha256(data + b"tail")}) as response:
        assert response.status == 201, await response.text()
    assert await blob_bytes(api, "app", sha256(data + b"tail")) == data + b"tail"


async def test_put_may_carry_the_last_chunk_with_its_content_range(api):
    data = os.urandom(10_000)
    location = await start_upload(api, "app")
    async with api.session.patch(location, data=data[:6000], headers={"Content-Range": "0-5999"}) as response:
        assert response.status == 202
    async with api.session.put(location, params={"digest": sha256(data)}, data=data[6000:],
                               headers={"Content-Range": "6000-9999"}) as response:
        assert response.status == 201, await response.text()
    assert await blob_bytes(api, "app", sha256(data)) == data


async def test_out_of_order_chunk_is_416_and_keeps_the_upload(api):
    data = os.urandom(3000)
    location = await start_upload(api, "app")
    async with api.session.patch(location, data=data[:1000], headers={"Content-Range": "0-999"}) as response:
        assert response.status == 202
    # A gap (starts past what the server has) and a repeat (starts before it) are both refused.
    for start, end in ((2000, 2999), (0, 999), (500, 1499)):
        chunk = data[start : end + 1]
        async with api.session.patch(location, data=chunk, headers={"Content-Range": f"{start}-{end}"}) as response:
            await expect_oci_error(response, 416, "BLOB_UPLOAD_INVALID")
            assert response.headers["Range"] == "0-999", "416 must say what the server has"
    assert await upload_range(api, location) == "0-999"
    async with api.session.patch(location, data=data[1000:], headers={"Content-Range": "1000-2999"}) as response:
        assert response.status == 202
        assert response.headers["Range"] == "0-2999"
    async with api.session.put(location, params={"digest": sha256(data)}) as response:
        assert response.status == 201, await response.text()
    assert await blob_bytes(api, "app", sha256(data)) == data


async def test_first_chunk_not_starting_at_zero_is_416(api):
    location = await start_upload(api, "app")
    async with api.session.patch(location, data=b"x" * 10, headers={"Content-Range": "5-14"}) as response:
        await expect_oci_error(response, 416, "BLOB_UPLOAD_INVALID")
        assert response.headers["Range"] == "0-0"
    assert await upload_range(api, location) == "0-0"


async def test_content_range_that_disagrees_with_content_length_is_416(api):
    location = await start_upload(api, "app")
    async with api.session.patch(location, data=b"x" * 10, headers={"Content-Range": "0-19"}) as response:
        await expect_oci_error(response, 416, "BLOB_UPLOAD_INVALID")
    async with api.session.patch(location, data=b"x" * 10, headers={"Content-Range": "not-a-range"}) as response:
        await expect_oci_error(response, 416, "BLOB_UPLOAD_INVALID")
    assert await upload_range(api, location) == "0-0"


async def test_out_of_order_final_put_is_416_and_keeps_the_upload(api):
    data = os.urandom(2000)
    location = await start_upload(api, "app")
    async with api.session.patch(location, data=data[:1000]) as response:
        assert response.status == 202
    async with api.session.put(location, params={"digest": sha256(data)}, data=data[1500:],
                               headers={"Content-Range": "1500-1999"}) as response:
        await expect_oci_error(response, 416, "BLOB_UPLOAD_INVALID")
        assert response.headers["Range"] == "0-999"
    async with api.session.put(location, params={"digest": sha256(data)}, data=data[1000:],
                               headers={"Content-Range": "1000-1999"}) as response:
        assert response.status == 201, await response.text()
    assert await blob_bytes(api, "app", sha256(data)) == data


async def test_an_interrupted_patch_keeps_what_arrived_and_resumes_from_the_range(api):
    data = os.urandom(4 << 20)
    location = await start_upload(api, "app")
    path = urlsplit(location).path
    sent = 3 << 20
    reader, writer = await asyncio.open_connection(api.server.host, api.server.port)
    writer.write(
        f"PATCH {path} HTTP/1.1\r\nHost: {api.server.host}:{api.server.port}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(data)}\r\n\r\n".encode()
    )
    writer.write(data[:sent])
    await writer.drain()
    # Wait (with a deadline) until the server has written part of it, then drop the connection.
    deadline = time.monotonic() + 20
    while (await upload_range(api, location)) == "0-0":
        assert time.monotonic() < deadline, "the server never wrote any of the interrupted chunk"
        await asyncio.sleep(0.01)
    writer.close()
    # An empty PATCH is served after the interrupted one has let go of the session: it reports the offset.
    async with api.session.patch(location, data=b"") as response:
        assert response.status == 202, await response.text()
        kept = int(response.headers["Range"].split("-")[1]) + 1
    assert 0 < kept <= sent
    assert await upload_range(api, location) == f"0-{kept - 1}"
    async with api.session.patch(location, data=data[kept:],
                                 headers={"Content-Range": f"{kept}-{len(data) - 1}"}) as response:
        assert response.status == 202, await response.text()
    async with api.session.put(location, params={"digest": sha256(data)}) as response:
        assert response.status == 201, await response.text()
    assert await blob_bytes(api, "app", sha256(data)) == data


# --- end-13: status -----------------------------------------------------------------------------------


async def test_upload_status_is_204_with_range_location_and_uuid(api):
    location = await start_upload(api, "app")
    upload_id = urlsplit(location).path.rsplit("/", 1)[1]
    async with api.session.patch(location, data=b"a" * 123) as response:
        assert response.status == 202
    async with api.session.get(location) as response:
        assert response.status == 204
        assert response.headers["Range"] == "0-122"
        assert response.headers["Docker-Upload-UUID"] == upload_id
        assert urlsplit(response.headers["Location"]).path == urlsplit(location).path
        assert await response.read() == b""


async def test_status_of_an_unknown_upload_is_404_blob_upload_unknown(api):
    async with api.request("GET", "/v2/app/blobs/uploads/00000000-0000-4000-8000-000000000000") as response:
        await expect_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN")
    async with api.request("GET", "/v2/app/blobs/uploads/not-an-upload-id") as response:
        await expect_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN")


# --- cancel -------------------------------------------------------------------------------------------


async def test_delete_cancels_the_upload_then_it_is_404_blob_upload_unknown(api):
    location = await start_upload(api, "app")
    async with api.session.patch(location, data=b"abc") as response:
        assert response.status == 202
    async with api.session.delete(location) as response:
        assert response.status == 204, await response.text()
    async with api.session.get(location) as response:
        await expect_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN")
    async with api.session.patch(location, data=b"def") as response:
        await expect_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN")
    async with api.session.put(location, params={"digest": sha256(b"abc")}) as response:
        await expect_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN")
    async with api.session.delete(location) as response:
        await expect_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN")
    assert await blob_bytes(api, "app", sha256(b"abc")) is None


async def test_cancelling_removes_the_partial_file(api):
    location = await start_upload(api, "app")
    upload_id = urlsplit(location).path.rsplit("/", 1)[1]
    async with api.session.patch(location, data=b"partial") as response:
        assert response.status == 202
    assert session_bytes_stored(api.store, upload_id)
    async with api.session.delete(location) as response:
        assert response.status == 204
    assert not session_bytes_stored(api.store, upload_id)


def session_bytes_stored(store: RegistryStore, upload_id: str) -> bool:
    """The session's file (filesystem), or its blob of staged blocks (azure)."""
    if store.blob_store == "filesystem":
        return (Path(store.data_dir) / "uploads" / upload_id).exists()
    return store.files.container.get_blob_client(store.files.upload_name(upload_id)).exists()


# --- end-6: digest errors ---------------------------------------------------------------------------


async def test_digest_mismatch_is_digest_invalid_and_nothing_becomes_visible(api):
    data = os.urandom(5000)
    wrong = sha256(b"not these bytes")
    location = await start_upload(api, "app")
    async with api.session.patch(location, data=data) as response:
        assert response.status == 202
    async with api.session.put(location, params={"digest": wrong}) as response:
        error = await expect_oci_error(response, 400, "DIGEST_INVALID")
        assert sha256(data) in error["message"]
    assert await blob_bytes(api, "app", wrong) is None
    assert await blob_bytes(api, "app", sha256(data)) is None


async def test_put_without_a_digest_is_digest_invalid_and_keeps_the_upload(api):
    location = await start_upload(api, "app")
    async with api.session.patch(location, data=b"abc") as response:
        assert response.status == 202
    async with api.session.put(location) as response:
        await expect_oci_error(response, 400, "DIGEST_INVALID")
    async with api.session.put(location, params={"digest": "sha256:short"}) as response:
        await expect_oci_error(response, 400, "DIGEST_INVALID")
    assert await upload_range(api, location) == "0-2"
    async with api.session.put(location, params={"digest": sha256(b"abc")}) as response:
        assert response.status == 201, await response.text()


async def test_put_with_an_unsupported_digest_algorithm_is_digest_invalid(api):
    location = await start_upload(api, "app")
    async with api.session.put(location, params={"digest": "md5:" + "0" * 32}, data=b"abc") as response:
        error = await expect_oci_error(response, 400, "DIGEST_INVALID")
        assert "md5" in error["message"]


# --- an upload belongs to its repository -----------------------------------------------------------


async def test_an_upload_id_from_another_repository_is_blob_upload_unknown(api):
    location = await start_upload(api, "team-a/app")
    upload_id = urlsplit(location).path.rsplit("/", 1)[1]
    async with api.session.patch(location, data=b"abc") as response:
        assert response.status == 202
    foreign = f"/v2/team-b/app/blobs/uploads/{upload_id}"
    async with api.request("GET", foreign) as response:
        await expect_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN")
    async with api.request("PATCH", foreign, data=b"def") as response:
        await expect_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN")
    async with api.request("PUT", foreign, params={"digest": sha256(b"abc")}) as response:
        await expect_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN")
    async with api.request("DELETE", foreign) as response:
        await expect_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN")
    assert await blob_bytes(api, "team-b/app", sha256(b"abc")) is None
    # The owner's session was not touched.
    assert await upload_range(api, location) == "0-2"
    async with api.session.put(location, params={"digest": sha256(b"abc")}) as response:
        assert response.status == 201
    assert await blob_bytes(api, "team-a/app", sha256(b"abc")) == b"abc"


# --- sha512 -----------------------------------------------------------------------------------------


async def test_sha512_chunked_upload(api):
    data = os.urandom(200_000)
    location = await start_upload(api, "app")
    async with api.session.patch(location, data=data[:120_000], headers={"Content-Range": "0-119999"}) as response:
        assert response.status == 202
    async with api.session.put(location, params={"digest": sha512(data)}, data=data[120_000:]) as response:
        assert response.status == 201, await response.text()
        assert response.headers["Docker-Content-Digest"] == sha512(data)
    assert await blob_bytes(api, "app", sha512(data)) == data


async def test_sha512_monolithic_post_and_mismatch(api):
    data = os.urandom(3000)
    async with api.request("POST", "/v2/app/blobs/uploads/", params={"digest": sha512(data)}, data=data) as response:
        assert response.status == 201, await response.text()
    assert await blob_bytes(api, "app", sha512(data)) == data
    wrong = sha512(b"other")
    async with api.request("POST", "/v2/app/blobs/uploads/", params={"digest": wrong}, data=data) as response:
        await expect_oci_error(response, 400, "DIGEST_INVALID")
    assert await blob_bytes(api, "app", wrong) is None


# --- end-11: cross-repository mount -------------------------------------------------------------------


async def test_mount_from_a_repository_that_has_the_blob_is_201(api):
    data = os.urandom(2000)
    digest = await push_blob(api, "source/app", data)
    async with api.request("POST", "/v2/target/app/blobs/uploads/",
                           params={"mount": digest, "from": "source/app"}) as response:
        assert response.status == 201, await response.text()
        assert response.headers["Docker-Content-Digest"] == digest
        assert urlsplit(response.headers["Location"]).path == f"/v2/target/app/blobs/{digest}"
    assert await blob_bytes(api, "target/app", digest) == data
    # The mount is a link: the source keeps its blob when the target deletes its own.
    async with api.request("DELETE", f"/v2/target/app/blobs/{digest}") as response:
        assert response.status == 202
    assert await blob_bytes(api, "source/app", digest) == data


async def test_mount_when_the_source_lacks_the_blob_falls_back_to_a_202_upload(api):
    data = os.urandom(2000)
    digest = await push_blob(api, "elsewhere", data)  # present in the registry, but not in the source
    await push_blob(api, "source", b"something else")
    for source in ("source", "no/such/repository"):
        async with api.request("POST", "/v2/target/blobs/uploads/", params={"mount": digest, "from": source}) as response:
            assert response.status == 202, await response.text()
            location = response.headers["Location"]
            assert UUID.match(response.headers["Docker-Upload-UUID"])
        assert await blob_bytes(api, "target", digest) is None
    # The fallback session is an ordinary upload.
    async with api.session.put(location, params={"digest": digest}, data=data) as response:
        assert response.status == 201, await response.text()
    assert await blob_bytes(api, "target", digest) == data


async def test_mount_without_from_links_a_blob_of_a_readable_repository_else_starts_an_upload(api):
    """OCI 1.1: without `from`, any repository the caller may read (here: all of them) is a source."""
    digest = await push_blob(api, "source", b"abc")
    async with api.request("POST", "/v2/target/blobs/uploads/", params={"mount": digest}) as response:
        assert response.status == 201, await response.text()
        assert response.headers["Docker-Content-Digest"] == digest
    assert await blob_bytes(api, "target", digest) == b"abc"
    async with api.request("POST", "/v2/target/blobs/uploads/", params={"mount": sha256(b"nowhere")}) as response:
        assert response.status == 202
    assert await blob_bytes(api, "target", sha256(b"nowhere")) is None


async def test_mount_with_a_malformed_digest_is_digest_invalid(api):
    async with api.request("POST", "/v2/target/blobs/uploads/", params={"mount": "sha256:zz", "from": "source"}) as response:
        await expect_oci_error(response, 400, "DIGEST_INVALID")


async def test_mount_from_an_invalid_repository_name_is_name_invalid(api):
    digest = sha256(b"abc")
    async with api.request("POST", "/v2/target/blobs/uploads/", params={"mount": digest, "from": "Bad/Name"}) as response:
        await expect_oci_error(response, 400, "NAME_INVALID")


async def test_sha512_blob_can_be_mounted(api):
    data = os.urandom(1000)
    async with api.request("POST", "/v2/source/blobs/uploads/", params={"digest": sha512(data)}, data=data) as response:
        assert response.status == 201
    async with api.request("POST", "/v2/target/blobs/uploads/", params={"mount": sha512(data), "from": "source"}) as response:
        assert response.status == 201, await response.text()
    assert await blob_bytes(api, "target", sha512(data)) == data


# --- sessions survive a restart of the store ---------------------------------------------------------


async def test_upload_session_survives_a_restart_of_the_store(tmp_path: Path, blob_store):
    data = os.urandom((3 << 20) + 11)
    data_dir = str(tmp_path / "data")
    async with RegistryStore(data_dir, blob_store=blob_store.spec) as store:
        async with serve_store(store) as api:
            location = await start_upload(api, "app")
            path = urlsplit(location).path
            async with api.session.patch(location, data=data[: 2 << 20],
                                         headers={"Content-Range": f"0-{(2 << 20) - 1}"}) as response:
                assert response.status == 202

    async with RegistryStore(data_dir, blob_store=blob_store.spec) as store:
        async with serve_store(store) as api:
            async with api.request("GET", path) as response:
                assert response.status == 204, await response.text()
                assert response.headers["Range"] == f"0-{(2 << 20) - 1}"
            # A chunk that repeats what the old process already had is still refused after the restart.
            async with api.request("PATCH", path, data=data[:10], headers={"Content-Range": "0-9"}) as response:
                await expect_oci_error(response, 416, "BLOB_UPLOAD_INVALID")
                assert response.headers["Range"] == f"0-{(2 << 20) - 1}"
            async with api.request("PATCH", path, data=data[2 << 20 :],
                                   headers={"Content-Range": f"{2 << 20}-{len(data) - 1}"}) as response:
                assert response.status == 202, await response.text()
            async with api.request("PUT", path, params={"digest": sha256(data)}) as response:
                assert response.status == 201, await response.text()
            assert await blob_bytes(api, "app", sha256(data)) == data


async def test_a_restarted_store_verifies_the_digest_of_a_resumed_upload(tmp_path: Path, blob_store):
    data = os.urandom(100_000)
    data_dir = str(tmp_path / "data")
    async with RegistryStore(data_dir, blob_store=blob_store.spec) as store:
        async with serve_store(store) as api:
            path = urlsplit(await start_upload(api, "app")).path
            async with api.request("PATCH", path, data=data[:50_000]) as response:
                assert response.status == 202
    async with RegistryStore(data_dir, blob_store=blob_store.spec) as store:
        async with serve_store(store) as api:
            async with api.request("PUT", path, params={"digest": sha256(b"wrong")}, data=data[50_000:]) as response:
                await expect_oci_error(response, 400, "DIGEST_INVALID")
            assert await blob_bytes(api, "app", sha256(data)) is None


async def test_a_sha512_upload_can_be_finished_after_a_restart(tmp_path: Path, blob_store):
    data = os.urandom(100_000)
    data_dir = str(tmp_path / "data")
    async with RegistryStore(data_dir, blob_store=blob_store.spec) as store:
        async with serve_store(store) as api:
            path = urlsplit(await start_upload(api, "app")).path
            async with api.request("PATCH", path, data=data[:60_000]) as response:
                assert response.status == 202
    async with RegistryStore(data_dir, blob_store=blob_store.spec) as store:
        async with serve_store(store) as api:
            async with api.request("PUT", path, params={"digest": sha512(data)}, data=data[60_000:]) as response:
                assert response.status == 201, await response.text()
            assert await blob_bytes(api, "app", sha512(data)) == data


async def test_a_cancelled_upload_stays_unknown_after_a_restart(tmp_path: Path, blob_store):
    data_dir = str(tmp_path / "data")
    async with RegistryStore(data_dir, blob_store=blob_store.spec) as store:
        async with serve_store(store) as api:
            location = await start_upload(api, "app")
            path = urlsplit(location).path
            async with api.session.delete(location) as response:
                assert response.status == 204
    async with RegistryStore(data_dir, blob_store=blob_store.spec) as store:
        async with serve_store(store) as api:
            for method in ("GET", "PATCH", "PUT", "DELETE"):
                async with api.request(method, path, params={"digest": sha256(b"")}) as response:
                    assert response.status == 404, (method, response.status)
                    await expect_oci_error(response, 404, "BLOB_UPLOAD_UNKNOWN")
