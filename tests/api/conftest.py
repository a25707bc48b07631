"""Fixtures for tests with real container clients: containerd + ctr, dockerd (moby), nginx as the IoT Edge API proxy,
CNCF distribution, and a test PKI. See tests/support/clients.py for how each one is run without touching the host.

The daemons are slow to start compared with a test, so containerd and dockerd live for the module that asks for them;
nginx and distribution are per test. Every teardown stops its process by PID and then checks that the process is gone
and that nothing is left mounted under its directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.clients import ApiProxy, Containerd, Distribution, Dockerd, process_exists
from tests.support.pki import TestPki, make_pki


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
def dockerd(containerd: Containerd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    """moby 20.10 in a private mount namespace, using the `containerd` fixture; `.docker(...)` runs /usr/bin/docker."""
    daemon = Dockerd(tmp_path_factory.mktemp("dockerd"), containerd)
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
