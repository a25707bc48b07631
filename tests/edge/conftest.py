"""A module under a simulated IoT Edge runtime (tests/support/edge_runtime.py), below a root instance; and the module
image built once per session (tests/support/module_image.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.edge.modules import MODULE_NAME, edge_module_under, module_desired
from tests.support.clients import Dockerd
from tests.support.module_image import ModuleImage, build_module_image
from tests.support.pki import TestPki, make_pki
from tests.sync.hierarchy import start_instance


@pytest.fixture(scope="session")
def edge_pki(tmp_path_factory) -> TestPki:
    return make_pki(tmp_path_factory.mktemp("edge-pki"), common_name="simulated IoT Edge root CA")


@pytest.fixture
def root(tmp_path: Path):
    """A root instance with the module's sync token."""
    instance = start_instance(tmp_path, "factory-root", children=[(MODULE_NAME, "ReadOnly")])
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def edge_module(tmp_path: Path, edge_pki: TestPki, root):
    with edge_module_under(tmp_path, edge_pki, module_desired(), root=root) as module:
        yield module


@pytest.fixture(scope="session")
def module_image(tmp_path_factory) -> Iterator[ModuleImage]:
    """The module image built from the checkout in a dockerd of its own (the build engine), once per session."""
    engine = Dockerd(tmp_path_factory.mktemp("build-dockerd"))
    try:
        yield build_module_image(engine)
    finally:
        engine.stop()
        assert not engine.leftover_mounts, engine.leftover_mounts
