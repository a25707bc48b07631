"""Committed blobs in Azure Blob Storage: `<prefix>blobs/<algorithm>/<hex>` in one container.

A blob gets there only by a server-side copy of a verified upload (uploads.py) or, for a manifest, one small put,
both before the metadata commit that makes it visible; so nothing is visible before its bytes are committed and
verified. The bytes go through the SDK's asyncio client; the few short calls that must run inside a metadata
commit (does it exist, delete it, put a manifest) use its synchronous client, on the writer thread, where the
filesystem backend does its renames and unlinks, so they keep the same order against garbage collection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

from azure.core.exceptions import (AzureError, ClientAuthenticationError, HttpResponseError, ResourceExistsError,
                                   ResourceNotFoundError)
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas
from azure.storage.blob.aio import BlobServiceClient as AsyncBlobServiceClient

from connected_registry.oci.digest import is_digest, parse_digest
from connected_registry.storage.azure.account import AzureLocation
from connected_registry.storage.blobstore import RemoteBlob
from connected_registry.storage.disk import StorageError

READ_URL_SECONDS = 600  # a redirected client has this long to start its download (it may resume with Range within)
_COPY_DEADLINE_SECONDS = 600.0  # a server-side copy inside one account is quick; one that hangs fails the PUT


@contextmanager
def storage_errors(location: AzureLocation, what: str) -> Iterator[None]:
    """Azure's failures as the StorageError the registry reports (503, a status detail), naming what to check."""
    try:
        yield
    except (ResourceNotFoundError, ResourceExistsError):
        raise
    except (ClientAuthenticationError, HttpResponseError) as error:
        if not isinstance(error, ClientAuthenticationError) and error.status_code not in (401, 403):
            raise StorageError("DISK_ERROR", f"{what} in {location}: {str(error).splitlines()[0][:300]}") from None
        raise StorageError("DISK_PERMISSION_DENIED", f"{what} in {location}: Azure refused the credentials "
                           f"({str(error).splitlines()[0][:200]}); check ACR_REGISTRY_BLOB_* in the environment and "
                           "the key's or SAS's rights on the container") from None
    except AzureError as error:
        raise StorageError("DISK_ERROR", f"{what} in {location}: {str(error).splitlines()[0][:300]}") from None


class AzureBlobs:
    """The azure `BlobStore` (blobstore.py), and the `RemoteReads` of the blobs it serves."""

    def __init__(self, location: AzureLocation, service: BlobServiceClient, aio: AsyncBlobServiceClient) -> None:
        self.location = location
        self.service = service
        self.aio = aio
        self.container = service.get_container_client(location.container)
        self.aio_container = aio.get_container_client(location.container)
        self._prepare()

    def _prepare(self) -> None:
        with storage_errors(self.location, "opening the container"):
            try:
                self.container.create_container()
            except ResourceExistsError:
                pass

    def name(self, digest: str) -> str:
        algorithm, hex_part = parse_digest(digest)
        return f"{self.location.prefix}blobs/{algorithm}/{hex_part}"

    def upload_name(self, upload_id: str) -> str:
        return f"{self.location.prefix}uploads/{upload_id}"

    # --- inside metadata writes (the synchronous client) -------------------------------------------------

    def exists(self, digest: str) -> bool:
        with storage_errors(self.location, f"looking up {digest}"):
            return self.container.get_blob_client(self.name(digest)).exists()

    def remove(self, digest: str) -> None:
        self.remove_name(self.name(digest))

    def remove_name(self, name: str) -> None:
        with storage_errors(self.location, f"removing {name}"):
            try:
                self.container.delete_blob(name)
            except ResourceNotFoundError:
                pass

    def write_small(self, data: bytes, digest: str) -> None:
        with storage_errors(self.location, f"storing {digest}"):
            try:  # content-addressed: one already there holds these very bytes
                self.container.upload_blob(self.name(digest), data, overwrite=False)
            except ResourceExistsError:
                pass

    def read_small(self, digest: str, limit: int) -> bytes | None:
        with storage_errors(self.location, f"reading {digest}"):
            try:
                return self.container.download_blob(self.name(digest), offset=0, length=limit).readall()
            except ResourceNotFoundError:
                return None

    def write_probe(self, size: int) -> None:
        """Blob bytes go to Azure, which has no full volume to recover from; the local volume holds the metadata,
        whose own commit is the probe."""

    def remove_strays(self, held: Callable[[str], bool], cutoff: float) -> int:
        removed = 0
        start = f"{self.location.prefix}blobs/"
        with storage_errors(self.location, "listing blobs"):
            for item in self.container.list_blobs(name_starts_with=start):
                algorithm, _, hex_part = item.name.removeprefix(start).partition("/")
                digest = f"{algorithm}:{hex_part}"
                if is_digest(digest) and not held(digest) and item.last_modified.timestamp() < cutoff:
                    self.remove_name(item.name)
                    removed += 1
        return removed

    # --- the bytes (the asyncio client) --------------------------------------------------------------------

    def stored(self, digest: str, size: int) -> RemoteBlob:
        return RemoteBlob(digest, size, self)

    async def chunks(self, digest: str, start: int, end: int) -> AsyncIterator[bytes]:
        if end <= start:
            return
        with storage_errors(self.location, f"reading {digest}"):
            try:
                downloader = await self.aio_container.download_blob(self.name(digest), offset=start,
                                                                    length=end - start)
            except ResourceNotFoundError:
                raise StorageError("DISK_ERROR", f"blob {digest} is missing from {self.location}: it is recorded "
                                   "but its bytes are gone; push it again") from None
            async for chunk in downloader.chunks():
                yield chunk

    def read_url(self, digest: str) -> str | None:
        credential = self.service.credential
        key = getattr(credential, "account_key", None)
        if not key:
            return None
        expiry = datetime.now(timezone.utc) + timedelta(seconds=READ_URL_SECONDS)
        name = self.name(digest)
        sas = generate_blob_sas(credential.account_name, self.location.container, name, account_key=key,
                                permission=BlobSasPermissions(read=True), expiry=expiry)
        return f"{self.container.get_blob_client(name).url}?{sas}"

    async def copy_in(self, upload_id: str, digest: str) -> None:
        """Server-side copy of a verified upload to its digest's name (nothing crosses this machine)."""
        target = self.aio_container.get_blob_client(self.name(digest))
        source = self.aio_container.get_blob_client(self.upload_name(upload_id))
        with storage_errors(self.location, f"storing {digest}"):
            copy = await target.start_copy_from_url(source.url)
            status = copy.get("copy_status")
            async with asyncio.timeout(_COPY_DEADLINE_SECONDS):
                while status == "pending":
                    await asyncio.sleep(0.05)  # Azure's copy status can only be polled
                    status = (await target.get_blob_properties()).copy.status
            if status != "success":
                raise StorageError("DISK_ERROR", f"copying upload {upload_id} to {digest} in {self.location} "
                                   f"ended {status}: push the blob again")

    async def aclose(self) -> None:
        await self.aio.close()
        self.service.close()
