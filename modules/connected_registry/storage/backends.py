"""Which metadata store and which blob store an instance opens: the embedded default (SQLite and files in the data
directory), PostgreSQL for the metadata, Azure Blob Storage for the bytes (issue 18). The heavy libraries of the
others (psycopg, the Azure SDK) are imported only by the instances that choose them."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from connected_registry.storage.blobs import BlobFiles
from connected_registry.storage.blobstore import FILESYSTEM, BlobStore, UploadSessions
from connected_registry.storage.coordination import Replica
from connected_registry.storage.disk import Disk, StorageError
from connected_registry.storage.metadata import MetadataStore
from connected_registry.storage.sqlite import SqliteMetadata
from connected_registry.storage.uploads import Uploads
from connected_registry.timefmt import Clock

METADATA_DSN_VARIABLE = "ACR_REGISTRY_METADATA_DSN"


def open_metadata(data_dir: str, disk: Disk, dsn: str | None) -> MetadataStore:
    """`sqlite` (or nothing: ACR_REGISTRY_METADATA_DSN, else SQLite): SQLite in the data directory; a libpq DSN
    (`postgresql://...`, or `host=... dbname=...`): that PostgreSQL database, which several replicas may share."""
    dsn = dsn or os.environ.get(METADATA_DSN_VARIABLE)
    if not dsn or dsn == "sqlite":
        return SqliteMetadata(data_dir, disk)
    scheme, separator, _ = dsn.partition("://")
    if scheme in ("postgresql", "postgres") or (not separator and "=" in dsn):
        # Imported here: psycopg is loaded only by instances that use PostgreSQL.
        from connected_registry.storage.postgres import PostgresMetadata

        return PostgresMetadata(dsn, disk)
    what = f"{scheme!r}" if separator else "a value that is neither a URL nor key=value pairs"  # never the password
    raise StorageError("DISK_ERROR", f"unknown metadata store {what}: give `sqlite` or a "
                       "postgresql://USER@HOST:PORT/DATABASE URL (`serve --metadata`, ACR_REGISTRY_METADATA_DSN)")


def open_blob_store(spec: str, data_dir: str, disk: Disk, metadata: MetadataStore, io: ThreadPoolExecutor,
                    clock: Clock) -> tuple[BlobStore, UploadSessions]:
    """`filesystem`: files in the data directory; `azure://<container>[/<prefix>]`: that container (storage/azure/)."""
    if spec == FILESYSTEM:
        files = BlobFiles(data_dir, disk)
        return files, Uploads(files, metadata, io, clock)
    # Imported here: the Azure SDK is a heavy library that the embedded default never loads.
    from connected_registry.storage.azure import open_azure_store

    return open_azure_store(spec, metadata, io, clock)


def cluster_status(dsn: str | None) -> tuple[str, list[Replica]]:
    """Where the metadata is, and the replicas sharing it (with the leases each holds): `cluster status`."""
    dsn = dsn or os.environ.get(METADATA_DSN_VARIABLE)
    if not dsn or dsn == "sqlite":
        raise StorageError("DISK_ERROR", "the metadata is SQLite, one replica's own: a cluster needs a shared "
                           "PostgreSQL database; give --metadata DSN (or ACR_REGISTRY_METADATA_DSN) as `serve` has it")
    # Imported here: psycopg is loaded only by instances that use PostgreSQL.
    from connected_registry.storage.postgres.coordination import cluster_status as replicas
    from connected_registry.storage.postgres.dialect import describe

    return f"postgresql ({describe(dsn)})", replicas(dsn)
