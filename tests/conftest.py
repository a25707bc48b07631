"""Fixtures shared by every test folder."""

from __future__ import annotations

import asyncio
import shutil
import sys
import threading
from pathlib import Path

import pytest

from connected_registry.storage import RegistryStore
from tests.support.oci import serve_store
from tests.support.processes import RegistryProcess


@pytest.fixture(autouse=True)
def asyncio_tasks_dumped_before_the_timeout(request):
    """A test that hangs is killed by pytest-timeout, which shows only the threads: the main one sits in the event
    loop's select. Shortly before that, print the stack of every pending asyncio task, which shows what awaits."""
    marker = request.node.get_closest_marker("timeout")
    limit = float(marker.args[0]) if marker and marker.args else float(request.config.getini("timeout") or 0)
    if limit <= 30:
        yield
        return
    timer = threading.Timer(limit - 15, _dump_tasks, args=(request.node.nodeid,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _dump_tasks(nodeid: str) -> None:
    print(f"\n+++ {nodeid} still runs: the pending asyncio tasks +++", file=sys.stderr)
    for _ in range(3):  # the set may change while it is read from this thread
        try:
            tasks = list(asyncio.tasks._all_tasks)
            break
        except RuntimeError:
            continue
    else:
        return
    for task in tasks:
        if not task.done():
            task.print_stack(limit=12, file=sys.stderr)


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
