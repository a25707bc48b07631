"""The metadata store is one interface (`storage.metadata`); the SQLite and PostgreSQL implementations give all of
it, and the store's time is its clock's."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest

from connected_registry.storage import RegistryStore
from connected_registry.storage.gc import GRACE_SECONDS, collect_garbage
from connected_registry.storage.metadata import MetadataReads, MetadataStore, MetadataWrites
from connected_registry.storage.postgres.database import PostgresMetadata, PostgresReads, PostgresWrites
from connected_registry.storage.sqlite.database import SqliteMetadata, SqliteReads, SqliteWrites
from tests.storage.test_store import put_blob
from tests.support.postgres import both_metadata_backends


def _members(protocol: type) -> dict[str, inspect.Signature]:
    names = {name for klass in protocol.__mro__ if klass not in (object,) and "Protocol" not in klass.__name__
             for name, value in vars(klass).items() if callable(value) and not name.startswith("_")}
    return {name: inspect.signature(getattr(protocol, name)) for name in names}


@pytest.mark.parametrize(("protocol", "implementation"), [
    (MetadataReads, SqliteReads), (MetadataWrites, SqliteWrites), (MetadataStore, SqliteMetadata),
    (MetadataReads, PostgresReads), (MetadataWrites, PostgresWrites), (MetadataStore, PostgresMetadata)])
def test_each_metadata_store_implements_every_method_of_the_interface_with_its_parameters(protocol, implementation):
    wanted = _members(protocol)
    assert len(wanted) > 10
    for name, signature in wanted.items():
        assert hasattr(implementation, name), f"{implementation.__name__} lacks {name}"
        given = inspect.signature(getattr(implementation, name))
        assert list(given.parameters) == list(signature.parameters), f"{implementation.__name__}.{name}{given}"
        assert inspect.iscoroutinefunction(getattr(implementation, name)) == inspect.iscoroutinefunction(
            getattr(protocol, name)), name


@both_metadata_backends
async def test_an_upload_is_stamped_with_the_stores_clock_and_gc_reads_the_same_clock(tmp_path: Path):
    now = [1_000_000.0]
    async with RegistryStore(str(tmp_path), clock=lambda: now[0]) as store:
        digest = await put_blob(store, "repo", os.urandom(100))
        now[0] += GRACE_SECONDS - 60
        assert (await collect_garbage(store)).blobs_removed == 0
        now[0] += 120  # a day after the store's clock said the blob was last used, whatever the wall clock says
        assert (await collect_garbage(store)).blobs_removed == 1
        assert store.blob_size("repo", digest) is None
