"""A module under a simulated IoT Edge runtime (tests/support/edge_runtime.py), below a root instance."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.edge_runtime import EdgeRuntime
from tests.support.pki import TestPki, make_pki
from tests.support.processes import RegistryProcess
from tests.sync.hierarchy import Instance, client_tokens, start_instance, sync_token_for

MODULE_NAME = "line1-edge"


@pytest.fixture(scope="session")
def edge_pki(tmp_path_factory) -> TestPki:
    return make_pki(tmp_path_factory.mktemp("edge-pki"), common_name="simulated IoT Edge root CA")


@dataclass
class EdgeModule:
    runtime: EdgeRuntime
    process: RegistryProcess
    root: Instance
    started: float  # time.monotonic() before the process was spawned

    @property
    def hub(self):
        return self.runtime.hub


def module_desired(schedule: str = "0 9 * * *", window: str = "PT1H") -> dict:
    """The module's twin: everything but the secrets (the parent and the sync token come from the environment)."""
    return {"mode": "ReadOnly", "repositories": ["factory/*"], "tokens": client_tokens(),
            "parent": {"syncProperties": {"schedule": schedule, "syncWindow": window}}, "reportInterval": "PT10S"}


def connection_string(name: str, parent: Instance) -> str:
    sync_name, sync_password, _ = sync_token_for(name)
    return (f"ConnectedRegistryName={name};SyncTokenName={sync_name};SyncTokenPassword={sync_password};"
            f"ParentGatewayEndpoint={parent.host};ParentEndpointProtocol=http")


def start_module(base: Path, runtime: EdgeRuntime, parent: Instance, name: str = MODULE_NAME,
                 env: dict | None = None) -> tuple[RegistryProcess, float]:
    started = time.monotonic()
    process = RegistryProcess(base / f"{name}-data", env={
        **runtime.module_env(), "ACR_REGISTRY_CONNECTION_STRING": connection_string(name, parent),
        "ACR_REGISTRY_CERTIFICATE_VOLUME": str(base / f"{name}-certs"), **(env or {})})
    return process, started


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
