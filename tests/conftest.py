"""Fixtures shared by every test folder: registries, skopeo, and the real container clients (containerd + ctr,
dockerd (moby), nginx as the IoT Edge API proxy, CNCF distribution) with a test PKI. See tests/support/clients.py
for how each one is run without touching the host.

The daemons are slow to start compared with a test, so containerd and dockerd live for the module that asks for them;
nginx and distribution are per test. Every teardown stops its process by PID and then checks that the process is gone
and that nothing is left mounted under its directory.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from connected_registry.storage import RegistryStore
from tests.support.azurite import Azurite
from tests.support.clients import ApiProxy, Containerd, Distribution, Dockerd, process_exists
from tests.support.cluster import ClusteredStores, ReplicaSet
from tests.support.oci import serve_store
from tests.support.netns import ShapedLink
from tests.support.pki import TestPki, make_pki
from tests.support.postgres import METADATA_DSN_VARIABLE, PostgresServer, schema_version
from tests.support.processes import RegistryProcess
from tests.sync import hierarchy


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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session (tests/support/postgres.py); `.new_database()` gives a fresh one."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()
        assert not (server.pid_at_start and process_exists(server.pid_at_start)), "PostgreSQL still runs after stop"


@pytest.fixture(autouse=True)
def metadata_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The metadata store of the stores and `serve` processes a test starts: sqlite, unless the test is
    parametrised with `both_metadata_backends` (tests/support/postgres.py); for postgresql, a fresh database named
    by ACR_REGISTRY_METADATA_DSN for the test, which the test's stores must have opened. Autouse, so it is set
    before the fixtures that start instances."""
    backend = getattr(request, "param", "sqlite")
    if backend != "postgresql":
        yield backend
        return
    dsn = request.getfixturevalue("postgres").new_database()
    monkeypatch.setenv(METADATA_DSN_VARIABLE, dsn)
    yield backend
    assert schema_version(dsn) is not None, "the test's stores did not open its PostgreSQL database"


@pytest.fixture(autouse=True)
def top_tier(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How the hierarchy a test starts with tests/sync/hierarchy.py's start_instance keeps its state: "embedded"
    (each instance as the environment says), unless the test is parametrised with BOTH_TOP_TIERS (hierarchy.py);
    "clustered": each root on a PostgreSQL database and an Azurite container of its own, as a scale-out replica
    (also those tests/sync/inprocess.py's start_runtime starts)."""
    tier = getattr(request, "param", "embedded")
    if tier == "clustered":
        stores = ClusteredStores(request.getfixturevalue("postgres"), request.getfixturevalue("azurite"))
        monkeypatch.setattr(hierarchy, "clustered_stores", stores)
        for name, value in stores.azurite.environment().items():  # what in-process instances (inprocess.py) read
            monkeypatch.setenv(name, value)
    return tier


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite (Azure Blob Storage's emulator) for the session, started the first time a test asks for it."""
    emulator = Azurite(tmp_path_factory.mktemp("azurite"))
    try:
        yield emulator
    finally:
        emulator.stop()
        assert not process_exists(emulator.pid), f"azurite (pid {emulator.pid}) still running after stop"


@dataclass(frozen=True)
class BlobStoreChoice:
    """Where a test's registry keeps its blobs: `spec` for RegistryStore(blob_store=...) and `serve --blob-store`
    (None: the filesystem default), `env` its credentials."""

    spec: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def serve_env(self) -> dict[str, str]:
        """The environment of a `serve` process started with this store (ACR_REGISTRY_BLOB_STORE and credentials)."""
        return {**self.env, "ACR_REGISTRY_BLOB_STORE": self.spec} if self.spec else {}


@pytest.fixture
def blob_store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> BlobStoreChoice:
    """The filesystem store, or, where a module parametrises it (`pytestmark = BOTH_BLOB_STORES`, tests/support/azurite.py), a container of its own
    in Azurite; in-process stores read its credentials from the environment, set here."""
    if getattr(request, "param", "filesystem") == "filesystem":
        return BlobStoreChoice()
    emulator = request.getfixturevalue("azurite")
    for name, value in emulator.environment().items():
        monkeypatch.setenv(name, value)
    return BlobStoreChoice(emulator.new_store(), emulator.environment())


@pytest.fixture
def registry(tmp_path: Path, blob_store: BlobStoreChoice):
    """A real `connected-registry serve` process with a fresh data directory; yields the RegistryProcess."""
    extra = ["--blob-store", blob_store.spec] if blob_store.spec else []
    process = RegistryProcess(tmp_path / "data", extra_args=extra, env=blob_store.env)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def api(tmp_path: Path, blob_store: BlobStoreChoice):
    """In-process registry (real HTTP on loopback) over a fresh RegistryStore; yields a ServedStore."""
    async with RegistryStore(str(tmp_path / "data"), origin="test-root", blob_store=blob_store.spec) as store:
        async with serve_store(store) as served:
            yield served


@pytest.fixture(scope="session")
def skopeo() -> str:
    path = shutil.which("skopeo")
    if path is None:
        pytest.fail("skopeo is not installed: run the README's test command, which installs it")
    return path


def _stop_and_check(daemon) -> None:
    daemon.stop()
    assert not process_exists(daemon.pid), f"{daemon.daemon.name} (pid {daemon.pid}) still running after stop"
    leftovers = getattr(daemon, "leftover_mounts", [])
    assert not leftovers, f"{daemon.daemon.name} left mounts behind (now unmounted): {leftovers}"


@pytest.fixture(scope="module")
def test_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """A test CA and a server certificate for localhost, 127.0.0.1 and the machine's non-loopback IPv4."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """containerd 1.6 with all its paths under a temp dir; `.ctr(...)` runs ctr against it."""
    daemon = Containerd(tmp_path_factory.mktemp("containerd"))
    try:
        yield daemon
    finally:
        _stop_and_check(daemon)


@pytest.fixture(scope="module")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    """moby 20.10 in a private mount namespace with its own containerd there; `.docker(...)` runs /usr/bin/docker."""
    daemon = Dockerd(tmp_path_factory.mktemp("dockerd"))
    try:
        yield daemon
    finally:
        _stop_and_check(daemon)


@pytest.fixture
def start_api_proxy(tmp_path: Path, test_pki: TestPki) -> Iterator[Callable[..., ApiProxy]]:
    """Start nginx as the IoT Edge API proxy in front of an upstream `host:port`; stopped at teardown."""
    started: list[ApiProxy] = []

    def start(upstream: str, extra_addresses: Sequence[str] = ()) -> ApiProxy:
        proxy = ApiProxy(tmp_path / f"api-proxy-{len(started)}", upstream, test_pki, extra_addresses=extra_addresses)
        started.append(proxy)
        return proxy

    try:
        yield start
    finally:
        for proxy in started:
            _stop_and_check(proxy)


@pytest.fixture
def api_proxy(registry, start_api_proxy) -> ApiProxy:
    """nginx as the IoT Edge API proxy (TLS, test CA) in front of the `registry` fixture's process."""
    return start_api_proxy(registry.host)


@pytest.fixture
def distribution(tmp_path: Path) -> Iterator[Distribution]:
    """CNCF distribution (`docker-registry serve`), a plain registry on a free loopback port."""
    registry = Distribution(tmp_path / "distribution")
    try:
        yield registry
    finally:
        _stop_and_check(registry)


@pytest.fixture
def shaped_link() -> Iterator[ShapedLink]:
    """A network namespace of the test's own for the parent side, joined to this one by a veth pair that
    `shaped_link.shape(bits_per_second)` rate-limits with tbf (tests/support/netns.py). Teardown stops what runs
    inside by PID, removes the namespace and the veth pair, and checks that nothing of them is left."""
    if os.geteuid() != 0:
        pytest.fail("a shaped link needs root (ip netns, ip link, tc): run the tests as `.ci/run` does")
    link = ShapedLink().open()
    try:
        yield link
    finally:
        link.close()
        assert not link.leftovers(), f"the shaped link left {link.leftovers()} behind"


@pytest.fixture(scope="module")
def replica_set(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer,
                azurite: Azurite):
    """Three `serve` replicas (or as many as an indirect parameter says) on one fresh PostgreSQL database and one
    Azurite container, behind nginx (round robin, no stickiness; tests/support/cluster.py), for the module: `.url`
    and `.host` are the balancer's."""
    cluster = ReplicaSet(tmp_path_factory.mktemp("replicas"), postgres.new_database(), azurite.new_store(),
                         azurite.environment(), count=getattr(request, "param", 3))
    try:
        yield cluster
    finally:
        cluster.stop()
        assert not any(replica.alive() for replica in cluster.replicas), "a replica still runs after stop"
