"""The metadata store (`storage.metadata.MetadataStore`) in SQLite: schema.py, database.py, and one module of
queries per part: content.py, log.py, control.py, housekeeping.py."""

from connected_registry.storage.sqlite.database import SqliteMetadata

__all__ = ["SqliteMetadata"]
