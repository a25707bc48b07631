"""The seam between the registry and where blob bytes live: one interface, two backends.

`filesystem` (blobs.py and uploads.py, the default: files in the data volume, renamed into place, fsynced) and
`azure` (storage/azure/: Azure Blob Storage, uploads as staged blocks, so any replica can continue one).
Everything above storage/ sees only these Protocols; the metadata store (metadata.py) stays where it is.

Calls marked "inside a write" run on the metadata writer thread, inside the transaction that depends on them,
so they never interleave with garbage collection removing the same digest (metadata.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from connected_registry.storage.metadata import MetadataWrites

FILESYSTEM = "filesystem"


@dataclass(frozen=True)
class StoredBlob:
    """A blob on this disk, whole: served from `path` with sendfile, Range and conditional headers."""

    path: str
    size: int


class RemoteReads(Protocol):
    """How a blob held in object storage is read: streamed through the registry, or fetched by the client itself."""

    def chunks(self, digest: str, start: int, end: int) -> AsyncIterator[bytes]:
        """The bytes [start, end) as they come from storage."""

    def read_url(self, digest: str) -> str | None:
        """A short-lived URL that reads the blob (a read-only SAS), or None when this store cannot sign one."""


@dataclass(frozen=True)
class RemoteBlob:
    """A blob whole in object storage (the azure backend)."""

    digest: str
    size: int
    reads: RemoteReads


class BlobStore(Protocol):
    """Committed, verified blobs by digest (manifests' bodies are blobs too)."""

    def exists(self, digest: str) -> bool:
        """Inside a write, or anywhere a stale answer is harmless."""

    def remove(self, digest: str) -> None:
        """Inside a write (or `serialized`): the blob's rows are gone."""

    def write_small(self, data: bytes, digest: str) -> None:
        """Inside a write: durably store a small verified blob held in memory (a manifest)."""

    def read_small(self, digest: str, limit: int) -> bytes | None:
        """Up to `limit` bytes of a small blob (a manifest), None when it is not stored."""

    def write_probe(self, size: int) -> None:
        """Inside a write: raise StorageError while the store cannot take data."""

    def stored(self, digest: str, size: int) -> StoredBlob | RemoteBlob:
        """How a GET reads a stored blob."""

    def chunks(self, digest: str, start: int, end: int) -> AsyncIterator[bytes]:
        """The bytes [start, end) of a stored blob as storage gives them (what the outbox sends up)."""

    def remove_strays(self, held: Callable[[str], bool], cutoff: float) -> int:
        """Inside `serialized`: remove blobs stored before `cutoff` that no row holds (a crash between storing
        and committing), and say how many."""

    async def aclose(self) -> None: ...


class UploadSession(Protocol):
    id: str
    repository: str
    offset: int  # bytes received and kept so far
    path: str | None  # the local file the bytes land in, readable as they arrive; None in object storage


class ByteStream(Protocol):
    async def readany(self) -> bytes: ...


class UploadSessions(Protocol):
    """Upload sessions: append a chunk, resume at the offset, finish with digest verification. Nothing is visible
    before its bytes are committed and verified."""

    body_idle_seconds: float
    sessions_per_token: int
    sessions_per_repository: int

    async def create(self, repository: str, persistent: bool = True, owner: str | None = None) -> UploadSession: ...

    def get(self, repository: str, upload_id: str) -> UploadSession:
        """A session this instance knows of; `BLOB_UPLOAD_UNKNOWN` otherwise."""

    async def find(self, repository: str, upload_id: str) -> UploadSession:
        """A client's session, as it stands now in storage (another replica may have appended to it)."""

    async def append(self, session: UploadSession, stream: ByteStream, start: int | None,
                     progress: Callable[[int], None] | None = None) -> int: ...

    async def complete(self, session: UploadSession, stream: ByteStream, digest: str, origin: str,
                       on_demand: bool = False, verified: Callable[[], None] | None = None) -> int: ...

    async def cancel(self, session: UploadSession) -> None: ...

    def open_sessions(self) -> int: ...

    def leftover_names(self) -> Iterable[str]:
        """Inside `serialized`: the sessions storage holds, rows or not (garbage collection's candidates)."""

    def remove_if_abandoned(self, tx: MetadataWrites, name: str, now: float, grace: float) -> bool: ...
