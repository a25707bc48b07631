"""The module's container as IoT Edge's edgeAgent creates and runs it, through a test dockerd's Engine API: the
`createOptions` of deployment.template.json's module, its environment, the IOTEDGE_* variables of a simulated runtime
(tests/support/edge_runtime.py) and the runtime's workload socket mounted where edgeAgent mounts it.

Two things differ from a device, and only these: the network is the host's (the tests' dockerd has no bridge, so no
`azure-iot-edge` network; edgeAgent would use that one), and the HEALTHCHECK's interval is 1 s instead of the image's
30 s (through the Engine API's Healthcheck config, as any createOptions may set it; the test command stays the image's
own), so that `healthy` shows within a test's time.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from tests.support.clients import Dockerd, engine_request
from tests.support.edge_runtime import EdgeRuntime
from tests.support.processes import REPO_ROOT, wait_until

API = "/v1.41"
MODULE = "connected-registry"  # the module's name in deployment.template.json, and so its container's name
WORKLOAD_SOCKET = "/var/run/iotedge/workload.sock"  # where edgeAgent mounts the module's workload socket
HEALTH_INTERVAL_NS = 1_000_000_000


def template_module() -> dict:
    """The module's entry in deployment.template.json (edgeAgent's desired properties)."""
    document = json.loads((REPO_ROOT / "deployment.template.json").read_text())
    return document["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"][MODULE]


def create_body(image: str, runtime: EdgeRuntime, values: dict[str, str]) -> dict:
    """POST /containers/create's body as edgeAgent builds it: the template's createOptions, with the image, the
    module's `env` (each template value filled from `values`) and edgeAgent's own IOTEDGE_* variables."""
    module = template_module()
    options = json.loads(module["settings"]["createOptions"])
    env = {name: values[name] for name in module["env"]}
    env.update(runtime.module_env(), IOTEDGE_WORKLOADURI=f"unix://{WORKLOAD_SOCKET}")
    host_config = options.setdefault("HostConfig", {})
    host_config["Binds"] = [*host_config.get("Binds", []), f"{runtime.socket_path}:{WORKLOAD_SOCKET}"]
    host_config["NetworkMode"] = "host"
    return {**options, "Image": image, "Env": [f"{name}={value}" for name, value in env.items()],
            "Healthcheck": {"Interval": HEALTH_INTERVAL_NS},
            "Labels": {"net.azure-devices.edge.owner": "Microsoft.Azure.Devices.Edge.Agent",
                       "net.azure-devices.edge.create-options": module["settings"]["createOptions"],
                       "net.azure-devices.edge.version": module["version"]}}


def _call(engine: Dockerd, method: str, path: str, expected: tuple[int, ...], body: object = None) -> bytes:
    status, answer = engine_request(engine.socket, method, API + path, json_body=body, timeout=60)
    assert status in expected, f"{method} {path}: {status} {answer[:2000]!r}"
    return answer


@dataclass
class ModuleContainer:
    """One container of the module in `engine`, created from `body`."""

    engine: Dockerd
    body: dict
    id: str = ""

    def create(self) -> "ModuleContainer":
        self.id = json.loads(_call(self.engine, "POST", f"/containers/create?name={MODULE}", (201,), self.body))["Id"]
        return self

    def start(self) -> None:
        _call(self.engine, "POST", f"/containers/{self.id}/start", (204,))

    def inspect(self) -> dict:
        return json.loads(_call(self.engine, "GET", f"/containers/{self.id}/json", (200,)))

    def wait_healthy(self, timeout: float = 90) -> dict:
        """Polls until the HEALTHCHECK says healthy; fails at once if the container stopped."""
        def healthy():
            state = self.inspect()["State"]
            assert state["Running"], f"the module exited ({state}):\n{self.logs()}"
            return state if state["Health"]["Status"] == "healthy" else None
        return wait_until(healthy, timeout=timeout, interval=0.2, what="the module's HEALTHCHECK to pass")

    def stop(self, grace: int = 10) -> float:
        """edgeAgent's stop: SIGTERM, SIGKILL after `grace` seconds; returns the seconds it took."""
        started = time.monotonic()
        _call(self.engine, "POST", f"/containers/{self.id}/stop?t={grace}", (204, 304), None)
        return time.monotonic() - started

    def remove(self) -> None:
        if self.id:
            _call(self.engine, "DELETE", f"/containers/{self.id}?force=true", (204, 404))

    def logs(self) -> str:
        result = self.engine.docker("logs", self.id, check=False)
        return result.stdout + result.stderr
