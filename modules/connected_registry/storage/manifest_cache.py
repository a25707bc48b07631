"""Manifests recently read, kept in memory by the registry's storage facade (registry.py)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

MANIFEST_CACHE_BYTES = 32 << 20


@dataclass(frozen=True)
class ManifestRecord:
    digest: str
    media_type: str
    size: int
    body: bytes
    subject: str | None


class ManifestCache:
    """Manifests recently read, bodies included, by (repository, reference), least recently used dropped first."""

    def __init__(self, limit: int = MANIFEST_CACHE_BYTES) -> None:
        self._records: OrderedDict[tuple[str, str], ManifestRecord] = OrderedDict()
        self._bytes = 0
        self._limit = limit
        self.generation = 0  # moves with every clear: a record read across one is not cached

    def get(self, key: tuple[str, str]) -> ManifestRecord | None:
        record = self._records.get(key)
        if record is not None:
            self._records.move_to_end(key)
        return record

    def remember(self, key: tuple[str, str], record: ManifestRecord) -> None:
        self._records[key] = record
        self._bytes += len(record.body)
        while self._bytes > self._limit and self._records:
            _, dropped = self._records.popitem(last=False)
            self._bytes -= len(dropped.body)

    def clear(self) -> None:
        self._records.clear()
        self._bytes = 0
        self.generation += 1
