"""The metadata store (`storage.metadata.MetadataStore`) in SQLite: schema.py, database.py, and one module of
queries per part: content.py, log.py, control.py, housekeeping.py. The queries keep to SQL PostgreSQL speaks too:
storage/postgres/ runs them as they are."""

from connected_registry.storage.sqlite.database import SqliteMetadata

__all__ = ["SqliteMetadata"]
