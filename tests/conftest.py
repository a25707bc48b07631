"""Fixtures shared by every test folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from connected_registry.storage import RegistryStore
from tests.support.oci import serve_store
from tests.support.processes import RegistryProcess


@pytest.fixture
def registry(tmp_path: Path):
    """A real `connected-registry serve` process with a fresh data directory; yields the RegistryProcess."""
    process = RegistryProcess(tmp_path / "data")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def api(tmp_path: Path):
    """In-process registry (real HTTP on loopback) over a fresh RegistryStore; yields a ServedStore."""
    store = RegistryStore(str(tmp_path / "data"), origin="test-root")
    try:
        async with serve_store(store) as served:
            yield served
    finally:
        store.close()


@pytest.fixture(scope="session")
def skopeo() -> str:
    path = shutil.which("skopeo")
    if path is None:
        pytest.fail("skopeo is not installed: run the README's test command, which installs it")
    return path
