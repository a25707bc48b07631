"""Crash-safe embedded storage: content-addressed blobs, uploads, the metadata store (one interface, metadata.py;
SQLite behind it, sqlite/), event log, outbox, control state, gc.

Nothing here knows HTTP. Errors a client caused are `OciError`s; disk trouble is `StorageError`.
"""

from connected_registry.storage.disk import Disk, StorageError
from connected_registry.storage.registry import RegistryStore

__all__ = ["Disk", "RegistryStore", "StorageError"]
