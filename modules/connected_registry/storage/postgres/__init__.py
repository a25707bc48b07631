"""The metadata store (`storage.metadata.MetadataStore`) in PostgreSQL, for several replicas sharing one database:
schema.py (the same schema and migrations as SQLite's), dialect.py, database.py. The queries are storage/sqlite/'s."""

from connected_registry.storage.postgres.database import PostgresMetadata

__all__ = ["PostgresMetadata"]
