"""The azure blob store against Azurite, through real `serve` processes and real clients: blobRedirect's 307 to a
read SAS URL followed by skopeo and by a client with Range, an upload started on one process and finished on
another that shares the container, and garbage collection in the container. (The core API suites, tests/api
test_blobs, test_uploads and test_skopeo, also run against this store.)"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

from connected_registry.storage import RegistryStore
from connected_registry.storage.gc import collect_garbage
from tests.api.auth_fixtures import PASSWORDS, token_entry
from tests.support.azurite import ACCOUNT, ACCOUNT_KEY
from tests.support.layouts import make_image, manifest_digest, read_blob
from tests.support.oci import push_blob, serve_store
from tests.support.processes import RegistryProcess, free_port, run_cli


def run_skopeo(*arguments: str) -> None:
    result = subprocess.run(["skopeo", *arguments], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"skopeo {' '.join(arguments)} failed:\n{result.stderr}"


def serve_on_azure(directory: Path, azurite, store: str, document: dict | None = None) -> RegistryProcess:
    extra = ["--blob-store", store]
    if document is not None:
        (directory / "desired.json").parent.mkdir(parents=True, exist_ok=True)
        (directory / "desired.json").write_text(json.dumps(document))
        extra += ["--config", str(directory / "desired.json")]
    return RegistryProcess(directory / "data", extra_args=extra, env=azurite.environment())


async def test_blob_redirect_answers_307_to_a_read_sas_url_that_skopeo_and_range_requests_follow(
        azurite, skopeo, tmp_path: Path):
    document = {"name": "scaled-root", "anonymousPull": True, "blobRedirect": True,
                "tokens": {"writer1": token_entry([PASSWORDS["writer1"]], ["repositories/factory/*/content/write",
                                                                         "repositories/factory/*/content/read"])}}
    registry = serve_on_azure(tmp_path, azurite, azurite.new_store(), document)
    try:
        source = tmp_path / "source"
        digest = make_image(source, "v1", layers=2, size="300K")
        run_skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds",
                   f"writer1:{PASSWORDS['writer1']}", f"oci:{source}:v1", f"docker://{registry.host}/factory/app:v1")
        layer = json.loads(read_blob(source, digest))["layers"][0]["digest"]
        data = read_blob(source, layer)

        async with aiohttp.ClientSession() as session:
            url = f"{registry.url}/v2/factory/app/blobs/{layer}"
            async with session.get(url, allow_redirects=False) as response:
                assert response.status == 307, await response.text()
                location = response.headers["Location"]
            target = urlsplit(location)
            assert target.port == azurite.port and "sig=" in target.query and "sp=r" in target.query
            async with session.get(location, headers={"Range": "bytes=100-199"}) as response:
                assert response.status == 206
                assert await response.read() == data[100:200]
            async with session.put(location, data=b"overwrite",  # the URL only reads
                                   headers={"x-ms-blob-type": "BlockBlob"}) as response:
                assert response.status == 403
            async with session.head(url, allow_redirects=False) as response:  # a HEAD is answered here
                assert response.status == 200 and int(response.headers["Content-Length"]) == len(data)

        pulled = tmp_path / "pulled"
        run_skopeo("copy", "--src-tls-verify=false", f"docker://{registry.host}/factory/app:v1", f"oci:{pulled}:v1")
        assert manifest_digest(pulled, "v1") == digest
        assert read_blob(pulled, layer) == data
    finally:
        registry.stop()


async def test_an_upload_started_on_one_process_is_finished_on_another_sharing_the_container(azurite, tmp_path):
    """Two `serve` processes, each with its own metadata, one container: chunks land on both, the second verifies
    the digest (re-hashing what the first staged) and commits the blob."""
    store = azurite.new_store()
    first = serve_on_azure(tmp_path / "first", azurite, store)
    second = serve_on_azure(tmp_path / "second", azurite, store)
    data = os.urandom((5 << 20) + 123)
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{first.url}/v2/factory/app/blobs/uploads/") as response:
                assert response.status == 202
                path = urlsplit(response.headers["Location"]).path
            async with session.patch(f"{first.url}{path}", data=data[:3 << 20],
                                     headers={"Content-Range": f"0-{(3 << 20) - 1}"}) as response:
                assert response.status == 202, await response.text()
            async with session.get(f"{second.url}{path}") as response:  # the second process sees the offset
                assert response.status == 204, await response.text()
                assert response.headers["Range"] == f"0-{(3 << 20) - 1}"
            async with session.put(f"{second.url}{path}", params={"digest": f"sha256:{'0' * 64}"},
                                   data=b"") as response:  # a wrong digest is refused, and the session discarded
                assert response.status == 400
            async with session.post(f"{first.url}/v2/factory/app/blobs/uploads/") as response:
                path = urlsplit(response.headers["Location"]).path
            async with session.patch(f"{first.url}{path}", data=data[:3 << 20]) as response:
                assert response.status == 202
            async with session.patch(f"{second.url}{path}", data=data[3 << 20:(4 << 20)],
                                     headers={"Content-Range": f"{3 << 20}-{(4 << 20) - 1}"}) as response:
                assert response.status == 202, await response.text()
            async with session.put(f"{first.url}{path}", params={"digest": digest}, data=data[4 << 20:],
                                   headers={"Content-Range": f"{4 << 20}-{len(data) - 1}"}) as response:
                assert response.status == 201, await response.text()
            async with session.get(f"{first.url}/v2/factory/app/blobs/{digest}") as response:
                assert response.status == 200
                assert await response.read() == data
    finally:
        first.stop()
        second.stop()


async def test_garbage_collection_removes_unreferenced_blobs_and_abandoned_sessions_from_the_container(
        azurite, monkeypatch, tmp_path):
    store_spec = azurite.new_store()
    for name, value in azurite.environment().items():
        monkeypatch.setenv(name, value)
    async with RegistryStore(str(tmp_path / "data"), blob_store=store_spec) as store:
        async with serve_store(store) as api:
            digest = await push_blob(api, "factory/app", b"unreferenced")
            async with api.request("POST", "/v2/factory/app/blobs/uploads/") as response:
                upload_id = urlsplit(response.headers["Location"]).path.rsplit("/", 1)[1]
        names = lambda: {item.name for item in store.files.container.list_blobs()}  # noqa: E731
        assert store.files.name(digest) in names() and store.files.upload_name(upload_id) in names()
        report = await collect_garbage(store, now=store.clock() + 2 * 24 * 3600)
        assert report.blobs_removed == 1 and report.uploads_removed == 1
        assert store.files.name(digest) not in names() and store.files.upload_name(upload_id) not in names()
        assert await asyncio.to_thread(store.files.exists, digest) is False


def test_serve_with_credentials_azure_refuses_stops_at_once_naming_what_to_check(azurite, tmp_path):
    wrong_key = azurite.connection_string.replace(ACCOUNT_KEY, base64.b64encode(b"not the key" * 6).decode())
    result = run_cli("serve", "--data", str(tmp_path / "data"), "--listen", f"127.0.0.1:{free_port()}",
                     "--metrics-listen", "off", "--blob-store", azurite.new_store(),
                     env={"ACR_REGISTRY_BLOB_CONNECTION_STRING": wrong_key})
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "DISK_PERMISSION_DENIED" in output and "ACR_REGISTRY_BLOB_" in output


def test_serve_without_blob_store_credentials_names_the_variables(tmp_path):
    result = run_cli("serve", "--data", str(tmp_path / "data"), "--listen", f"127.0.0.1:{free_port()}",
                     "--metrics-listen", "off", "--blob-store", "azure://registry/site1",
                     env={"ACR_REGISTRY_BLOB_CONNECTION_STRING": None, "ACR_REGISTRY_BLOB_ACCOUNT_URL": None})
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "ACR_REGISTRY_BLOB_CONNECTION_STRING" in output and "ACR_REGISTRY_BLOB_ACCOUNT_KEY" in output


async def test_with_a_sas_instead_of_the_key_pushes_and_pulls_work_and_gets_are_streamed_not_redirected(
        azurite, monkeypatch, tmp_path):
    sas = generate_account_sas(ACCOUNT, ACCOUNT_KEY, ResourceTypes(container=True, object=True),
                               AccountSasPermissions(read=True, write=True, delete=True, list=True, create=True,
                                                     add=True), expiry=datetime.now(timezone.utc) + timedelta(hours=1))
    monkeypatch.delenv("ACR_REGISTRY_BLOB_CONNECTION_STRING", raising=False)
    monkeypatch.setenv("ACR_REGISTRY_BLOB_ACCOUNT_URL", azurite.endpoint)
    monkeypatch.setenv("ACR_REGISTRY_BLOB_SAS", sas)
    data = os.urandom(300_000)
    async with RegistryStore(str(tmp_path / "data"), blob_store=azurite.new_store()) as store:
        async with serve_store(store) as api:
            digest = await push_blob(api, "factory/app", data)  # staged blocks, then the server-side copy
            async with api.request("GET", f"/v2/factory/app/blobs/{digest}",
                                   headers={"Range": "bytes=1000-"}) as response:
                assert response.status == 206
                assert await response.read() == data[1000:]
        assert store.files.read_url(digest) is None  # a SAS cannot sign another: blobRedirect streams instead
