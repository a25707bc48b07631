"""A module under a simulated IoT Edge runtime (tests/support/edge_runtime.py), below a root instance."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.edge.modules import MODULE_NAME, EdgeModule, module_desired, start_module
from tests.support.edge_runtime import EdgeRuntime
from tests.support.pki import TestPki, make_pki
from tests.sync.hierarchy import start_instance


@pytest.fixture(scope="session")
def edge_pki(tmp_path_factory) -> TestPki:
    return make_pki(tmp_path_factory.mktemp("edge-pki"), common_name="simulated IoT Edge root CA")


@pytest.fixture
def edge_module(tmp_path: Path, edge_pki: TestPki):
    root = start_instance(tmp_path, "factory-root", children=[(MODULE_NAME, "ReadOnly")])
    runtime = process = None
    try:
        runtime = EdgeRuntime(tmp_path / "edge", edge_pki, module_id="connectedRegistry", desired=module_desired())
        process, started = start_module(tmp_path, runtime, root)
        yield EdgeModule(runtime, process, root, started)
    finally:
        if process is not None:
            process.stop()
        if runtime is not None:
            runtime.stop()
        root.stop()
