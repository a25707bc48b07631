"""A connected registry module started as IoT Edge starts it: the IOTEDGE_* environment of a simulated runtime and
ACR_REGISTRY_CONNECTION_STRING; everything else comes from its twin."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tests.support.edge_runtime import EdgeRuntime
from tests.support.pki import TestPki
from tests.support.processes import RegistryProcess
from tests.sync.hierarchy import Instance, client_tokens, sync_token_for

MODULE_NAME = "line1-edge"


@dataclass
class EdgeModule:
    runtime: EdgeRuntime
    process: RegistryProcess
    root: Instance | None
    started: float  # time.monotonic() before the process was spawned

    @property
    def hub(self):
        return self.runtime.hub


# Sync windows far from now (computed once, when the tests start), so that no test depends on the time of day:
# the module's own one-hour window twelve hours away, and the one a patch moves it to, four hours after that.
QUIET_HOUR = (datetime.now(timezone.utc).hour + 12) % 24
QUIET_SCHEDULE = f"0 {QUIET_HOUR} * * *"
QUIET_START, QUIET_END = f"T{QUIET_HOUR:02d}:00:00Z", f"T{(QUIET_HOUR + 1) % 24:02d}:00:00Z"
OTHER_HOUR = (QUIET_HOUR + 4) % 24
OTHER_SCHEDULE = f"0 {OTHER_HOUR} * * *"
OTHER_START, OTHER_END_2H = f"T{OTHER_HOUR:02d}:00:00Z", f"T{(OTHER_HOUR + 2) % 24:02d}:00:00Z"


def module_desired(schedule: str = QUIET_SCHEDULE, window: str = "PT1H") -> dict:
    """The module's twin: everything but the secrets (the parent and the sync token come from the environment)."""
    return {"mode": "ReadOnly", "repositories": ["factory/*"], "tokens": client_tokens(),
            "parent": {"syncProperties": {"schedule": schedule, "syncWindow": window}}, "reportInterval": "PT10S"}


def codes(reported: dict) -> set[str]:
    """The codes of the status details in the module's reported properties (none yet: empty)."""
    return {detail["code"] for detail in reported.get("statusDetails") or []}


def connection_string(name: str, parent: Instance | None) -> str:
    """As `get-settings` prints it; without `parent`, the parent endpoint is left to the twin."""
    sync_name, sync_password, _ = sync_token_for(name)
    value = f"ConnectedRegistryName={name};SyncTokenName={sync_name};SyncTokenPassword={sync_password}"
    return value + (f";ParentGatewayEndpoint={parent.host};ParentEndpointProtocol=http" if parent else "")


def start_module(base: Path, runtime: EdgeRuntime, parent: Instance | None, name: str = MODULE_NAME,
                 env: dict | None = None, wait: bool = True) -> tuple[RegistryProcess, float]:
    started = time.monotonic()
    process = RegistryProcess(base / f"{name}-data", wait=wait, env={
        **runtime.module_env(), "ACR_REGISTRY_CONNECTION_STRING": connection_string(name, parent),
        "ACR_REGISTRY_CERTIFICATE_VOLUME": str(base / f"{name}-certs"), **(env or {})})
    return process, started


@contextmanager
def edge_module_under(base: Path, pki: TestPki, desired: dict, *, root: Instance | None, wait: bool = True,
                      start_broker: bool = True) -> Iterator[EdgeModule]:
    """A simulated IoT Edge runtime with this twin and the module in it (below `root`), both stopped at the end."""
    runtime = EdgeRuntime(base / "edge", pki, module_id="connectedRegistry", desired=desired,
                          start_broker=start_broker)
    process = None
    try:
        process, started = start_module(base, runtime, root, wait=wait)
        yield EdgeModule(runtime, process, root, started)
    finally:
        if process is not None:
            process.stop()
        runtime.stop()
