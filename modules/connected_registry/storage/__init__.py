"""Crash-safe embedded storage: content-addressed blobs, uploads, SQLite metadata, event log, outbox, gc.

Nothing here knows HTTP. Errors a client caused are `OciError`s; disk trouble is `StorageError`.
"""

from connected_registry.storage.disk import Disk, StorageError
from connected_registry.storage.registry import RegistryStore

__all__ = ["Disk", "RegistryStore", "StorageError"]
