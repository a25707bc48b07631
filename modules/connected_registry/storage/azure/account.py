"""Where the azure blob store is and how it signs in: `azure://<container>[/<prefix>]` plus the environment.

Credentials come only from the environment, never from the twin: `ACR_REGISTRY_BLOB_CONNECTION_STRING` (Azure's
connection string, which also names Azurite's endpoint), or `ACR_REGISTRY_BLOB_ACCOUNT_URL` with
`ACR_REGISTRY_BLOB_ACCOUNT_KEY` or `ACR_REGISTRY_BLOB_SAS`. Only an account key can sign the read SAS URLs of
`blobRedirect`; with a SAS the registry streams every blob itself.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from azure.storage.blob import BlobServiceClient, ExponentialRetry
from azure.storage.blob.aio import BlobServiceClient as AsyncBlobServiceClient
from azure.storage.blob.aio import ExponentialRetry as AsyncExponentialRetry

from connected_registry.storage.disk import StorageError

CONNECTION_STRING = "ACR_REGISTRY_BLOB_CONNECTION_STRING"
ACCOUNT_URL = "ACR_REGISTRY_BLOB_ACCOUNT_URL"
ACCOUNT_KEY = "ACR_REGISTRY_BLOB_ACCOUNT_KEY"
SAS = "ACR_REGISTRY_BLOB_SAS"
_CONTAINER = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")  # Azure's rule for container names
_PREFIX = re.compile(r"^[A-Za-z0-9._\-/]{0,200}$")


@dataclass(frozen=True)
class AzureLocation:
    container: str
    prefix: str  # "" or ending in "/"

    def __str__(self) -> str:
        return f"azure://{self.container}/{self.prefix}"


def parse_location(spec: str) -> AzureLocation:
    """`azure://<container>[/<prefix>]`; a bad one raises StorageError naming the rule."""
    if not spec.startswith("azure://"):
        raise StorageError("DISK_ERROR", f"blob store {spec!r} is neither 'filesystem' nor 'azure://<container>"
                           "[/<prefix>]': fix ACR_REGISTRY_BLOB_STORE or --blob-store")
    container, _, prefix = spec.removeprefix("azure://").partition("/")
    prefix = prefix.strip("/")
    if not _CONTAINER.match(container) or not _PREFIX.match(prefix) or "//" in prefix:
        raise StorageError("DISK_ERROR", f"blob store {spec!r}: the container must be 3 to 63 lowercase letters, "
                           "digits and single hyphens, and the prefix letters, digits, '.', '_', '-' and '/'")
    return AzureLocation(container, f"{prefix}/" if prefix else "")


def _options() -> dict:
    """Retries and timeouts a registry can wait for: the SDK's defaults keep a request retrying for minutes."""
    return {"retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=3),
            "connection_timeout": 10, "read_timeout": 60}


def _async_options() -> dict:
    """The bytes: a pull asks for 16 MiB per request after a first 4 MiB (the SDK's 4 MiB requests cost their
    overhead four times: Azurite served 110 MB/s with them, 260 MB/s with 16 MiB), and holds one such chunk at a time."""
    return {"retry_policy": AsyncExponentialRetry(initial_backoff=1, increment_base=2, retry_total=3),
            "connection_timeout": 10, "read_timeout": 60, "max_single_get_size": 4 << 20,
            "max_chunk_get_size": 16 << 20}


def service_clients(environ: os._Environ | dict = os.environ) -> tuple[BlobServiceClient, AsyncBlobServiceClient]:
    """The SDK's synchronous client (for the short calls inside metadata commits, on the writer thread) and its
    asyncio client (for the bytes), from the same credentials."""
    connection_string = environ.get(CONNECTION_STRING)
    if connection_string:
        return (BlobServiceClient.from_connection_string(connection_string, **_options()),
                AsyncBlobServiceClient.from_connection_string(connection_string, **_async_options()))
    url, key, sas = environ.get(ACCOUNT_URL), environ.get(ACCOUNT_KEY), environ.get(SAS)
    if not url or not (key or sas):
        raise StorageError("DISK_ERROR", f"the azure blob store needs credentials in the environment: "
                           f"{CONNECTION_STRING}, or {ACCOUNT_URL} with {ACCOUNT_KEY} or {SAS}")
    if key:
        return (BlobServiceClient(url, credential=key, **_options()),
                AsyncBlobServiceClient(url, credential=key, **_async_options()))
    signed_url = f"{url.rstrip('/')}/?{sas.lstrip('?')}"  # the SDK takes a SAS in the URL
    return BlobServiceClient(signed_url, **_options()), AsyncBlobServiceClient(signed_url, **_async_options())
