"""The azure blob store: blobs and upload sessions in Azure Blob Storage (one container, an optional prefix),
through the azure-storage-blob SDK. Selected by `ACR_REGISTRY_BLOB_STORE=azure://<container>[/<prefix>]` (or
`serve --blob-store`); credentials from the environment only (account.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from connected_registry.storage.azure.account import parse_location, service_clients
from connected_registry.storage.azure.blobs import AzureBlobs
from connected_registry.storage.azure.uploads import AzureUploads
from connected_registry.storage.metadata import MetadataStore
from connected_registry.timefmt import Clock


def open_azure_store(spec: str, metadata: MetadataStore, io_executor: ThreadPoolExecutor,
                     clock: Clock) -> tuple[AzureBlobs, AzureUploads]:
    blobs = AzureBlobs(parse_location(spec), *service_clients())
    return blobs, AzureUploads(blobs, metadata, io_executor, clock)


__all__ = ["AzureBlobs", "AzureUploads", "open_azure_store"]
