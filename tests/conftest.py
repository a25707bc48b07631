"""Fixtures shared by every test folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from connected_registry.api import create_app
from connected_registry.api.context import ApiContext
from connected_registry.auth import AnonymousAccess
from connected_registry.storage import RegistryStore
from tests.support.processes import RegistryProcess

MKIMAGE = Path(__file__).resolve().parents[1] / "tests" / "support" / "mkimage.py"


@pytest.fixture
def registry(tmp_path: Path):
    """A real `connected-registry serve` process with a fresh data directory; yields the RegistryProcess."""
    process = RegistryProcess(tmp_path / "data")
    try:
        yield process
    finally:
        process.stop()


class InProcessRegistry:
    """The registry app on a real loopback listener inside the test's event loop."""

    def __init__(self, store: RegistryStore, server: TestServer, session: aiohttp.ClientSession) -> None:
        self.store = store
        self.server = server
        self.session = session

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    def request(self, method: str, path: str, **kwargs):
        return self.session.request(method, self.url(path), **kwargs)


@pytest.fixture
async def api(tmp_path: Path):
    """In-process registry (real HTTP on loopback) over a fresh RegistryStore; yields InProcessRegistry."""
    store = RegistryStore(str(tmp_path / "data"), origin="test-root")
    server = TestServer(create_app(ApiContext(store=store, access=AnonymousAccess())), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield InProcessRegistry(store, server, session)
    await server.close()
    store.close()


@pytest.fixture(scope="session")
def skopeo() -> str:
    path = shutil.which("skopeo")
    if path is None:
        pytest.fail("skopeo is not installed: run the README's test command, which installs it")
    return path
