"""Issue 19, points 1 and 2: the module image IoT Edge deploys, built from the checkout's Dockerfile.amd64
(tests/support/module_image.py), pushed to a root, pulled by a device's engine at a cold ReadOnly leaf through a middle
layer with edgeAgent's Engine API call, and run with the template's createOptions as edgeAgent runs it
(tests/edge/containers.py) under a simulated IoT Edge runtime."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cache.layers import cache_status, skopeo_pull, start_cold_child
from tests.edge.containers import ModuleContainer, create_body
from tests.edge.modules import MODULE_NAME, connection_string, module_desired
from tests.support.clients import engine_request, registry_auth
from tests.support.edge_runtime import EdgeRuntime
from tests.support.layouts import make_image
from tests.support.module_image import ModuleImage
from tests.support.http import basic, request
from tests.support.processes import port_open, wait_until
from tests.sync.hierarchy import READER, WRITER, start_instance
from tests.sync.instance_api import skopeo_push

pytestmark = pytest.mark.timeout(900)  # the first test of a session also builds the image (the base: once a machine)

REPOSITORY, TAG = "factory/connected-registry", "1.0"
VOLUME = "connected-registry-data"
COMPILERS = ("gcc", "cc", "c++", "g++", "make")


@dataclass
class Listening:
    """Where the module in its container serves (the host's network: the image's own 0.0.0.0:8080)."""

    host: str = "127.0.0.1:8080"


def test_the_image_holds_no_build_tools_and_runs_python_3_11_as_uid_1000(module_image: ModuleImage):
    script = ("for tool in " + " ".join(COMPILERS) + "; do echo found $(command -v $tool); done; "
              "echo app $(ls -A /app); python --version; pip --version; id -u")
    result = module_image.engine.docker("run", "--rm", "--network", "none", "--entrypoint", "sh", module_image.tag,
                                        "-c", script)
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("found")] == ["found"] * len(COMPILERS), result.stdout
    assert "app README.md modules pyproject.toml" in lines, result.stdout  # no build/, no *.egg-info
    assert re.search(r"^Python 3\.11\.\d+$", result.stdout, re.M) and lines[-1] == "1000", result.stdout
    assert re.search(r"^pip \d+", result.stdout, re.M), result.stdout
    print(f"\nMEASURE module image {module_image.size / 1e6:.0f} MB (docker image inspect .Size); base made in "
          f"{module_image.base_seconds:.0f} s (0: cached), image built in {module_image.build_seconds:.0f} s")


def test_the_same_image_runs_the_demo_headless(module_image: ModuleImage):
    result = module_image.engine.docker("run", "--rm", "--network", "none", "-e", "COLUMNS=100", "--entrypoint",
                                        "connected-registry", module_image.tag, "demo", "--headless", timeout=240)
    assert re.search(r"arrived at the leaf\s+demo-leaf\s+after [\d.]+ s", result.stdout), result.stdout
    assert "3 registries, 0 unhealthy, 0 stale" in result.stdout and "nothing is left running" in result.stdout


@pytest.fixture
def pushed_to_a_root_with_two_cold_layers(tmp_path: Path, module_image: ModuleImage):
    """root ← plant-middle ← line1-leaf (both cold ReadOnly, factory/*) with the module image pushed to the root by
    the build engine (`docker push`); the module's own registry is a ReadWrite child of the root. Yields (root,
    middle, leaf)."""
    root = start_instance(tmp_path, "factory-root", children=[("plant-middle", "ReadOnly"), (MODULE_NAME, "ReadWrite")])
    middle = leaf = None
    try:
        middle = start_cold_child(tmp_path, "plant-middle", root, children=[("line1-leaf", "ReadOnly")])
        leaf = start_cold_child(tmp_path, "line1-leaf", middle)
        engine, target = module_image.engine, f"{root.host}/{REPOSITORY}:{TAG}"
        engine.docker("login", "-u", WRITER[0], "--password-stdin", root.host, input=WRITER[1] + "\n")
        engine.docker("tag", module_image.tag, target)
        engine.docker("push", target, timeout=300)
        yield root, middle, leaf
    finally:
        for instance in (leaf, middle, root):
            if instance is not None:
                instance.stop()


def pull_as_edge_agent(engine, leaf) -> str:
    """POST /images/create with X-Registry-Auth, as edgeAgent pulls a module's image; returns the image reference."""
    path = f"/v1.41/images/create?fromImage={leaf.host}/{REPOSITORY}&tag={TAG}"
    status, body = engine_request(engine.socket, "POST", path, {"X-Registry-Auth": registry_auth(*READER, leaf.host)},
                                  timeout=600)
    messages = [json.loads(line) for line in body.splitlines() if line.strip()]
    assert status == 200 and not [m for m in messages if "error" in m], messages[-5:]
    assert messages[-1]["status"].startswith("Status: Downloaded newer image"), messages[-5:]
    return f"{leaf.host}/{REPOSITORY}:{TAG}"


@pytest.fixture
def edge_runtime(tmp_path: Path, edge_pki):
    desired = {**module_desired(), "mode": "ReadWrite"}
    runtime = EdgeRuntime(tmp_path / "edge", edge_pki, module_id="connected-registry", desired=desired)
    # IoT Edge's module sockets take any UID's connection; the module runs as 1000, the simulated runtime as root
    runtime.socket_path.chmod(0o666)
    try:
        yield runtime
    finally:
        runtime.stop()


def pushed_bytes(root) -> int:
    """The compressed size of the image as `docker push` stored it at the root: its config and layers."""
    reply = request(f"{root.url}/v2/{REPOSITORY}/manifests/{TAG}",
                    headers={**basic(*READER), "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert reply.status == 200, reply.status
    manifest = json.loads(reply.body)
    return sum(blob["size"] for blob in [manifest["config"], *manifest["layers"]])


def _volume_owners(dockerd) -> set[tuple[int, int]]:
    """The (uid, gid) of the named volume's folder and of everything in it, as the device's host sees them."""
    mountpoint = Path(json.loads(dockerd.docker("volume", "inspect", VOLUME).stdout)[0]["Mountpoint"])
    paths = [mountpoint, *mountpoint.rglob("*")]
    return {(os.lstat(path).st_uid, os.lstat(path).st_gid) for path in paths}


def _process_uid(pid: int) -> list[str]:
    """The real, effective, saved and file-system UIDs of the container's main process, from the host."""
    status = Path(f"/proc/{pid}/status").read_text()
    return re.search(r"^Uid:\s+(.+)$", status, re.M).group(1).split()


def test_the_image_pulled_through_two_cold_layers_runs_as_edge_agent_starts_it(
        pushed_to_a_root_with_two_cold_layers, dockerd, edge_runtime, module_image: ModuleImage, tmp_path: Path):
    root, middle, leaf = pushed_to_a_root_with_two_cold_layers
    assert not port_open(8080) and not port_open(9600), "ports 8080 and 9600 must be free: the module uses the host's"
    started = time.monotonic()
    image = pull_as_edge_agent(dockerd, leaf)
    pull_seconds = time.monotonic() - started
    pulled_id = dockerd.docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
    assert pulled_id == module_image.id  # the device runs what was built, byte for byte
    pushed = pushed_bytes(root)
    for layer in (leaf, middle):  # both were cold: every byte of the image came down through each on demand
        wait_until(lambda: cache_status(layer)["bytesFetchedOnDemand"] >= pushed, timeout=10,
                   what=f"{layer.name} to count the {pushed} bytes it fetched on demand")

    body = create_body(image, edge_runtime, {"ACR_REGISTRY_CONNECTION_STRING": connection_string(MODULE_NAME, root)})
    container = ModuleContainer(dockerd, body)
    try:
        container.create().start()
        container.wait_healthy()
        edge_runtime.hub.wait_reported(lambda r: r.get("activation", {}).get("status") == "Active", timeout=60,
                                       what="the module Active at its parent")
        state = container.inspect()
        health = state["Config"]["Healthcheck"]  # the image's own test; only the interval is the test's
        assert health["Test"][:2] == ["CMD", "python"] and "/healthz" in health["Test"][-1], health
        assert state["Config"]["User"] == "1000:1000" and state["HostConfig"]["NetworkMode"] == "host"
        assert _process_uid(state["State"]["Pid"]) == ["1000"] * 4
        assert any(mount["Name"] == VOLUME and mount["Destination"] == "/var/acr/data" for mount in state["Mounts"])

        layout = tmp_path / "layout"
        digest = make_image(layout, "app", layers=2, size="256K")
        skopeo_push(layout, "app", Listening(), "factory/app:v1")  # a ReadWrite registry takes pushes
        skopeo_pull(Listening(), "factory/app:v1", tmp_path / "pulled")
        assert json.loads((tmp_path / "pulled" / "index.json").read_text())["manifests"][0]["digest"] == digest
        assert _volume_owners(dockerd) == {(1000, 1000)}  # the volume and all it holds belong to the module's user

        took = container.stop()
        stopped = container.inspect()["State"]
        assert took < 10 and stopped["ExitCode"] == 0, (took, stopped, container.logs())  # not SIGKILLed at 10 s
        assert "connected registry stopped" in container.logs()
        # reported before it exited; the hub reads it off the broker on its own thread
        edge_runtime.hub.wait_reported(lambda r: r.get("connectionState") == "Offline", timeout=5, what="Offline")
        print(f"\nMEASURE {pushed / 1e6:.0f} MB pushed (compressed) pulled through two cold layers in "
              f"{pull_seconds:.1f} s; the module's container stopped on SIGTERM in {took:.2f} s")

        container.remove()  # as edgeAgent recreates a module's container: only the named volume carries over
        container.create().start()
        container.wait_healthy()
        skopeo_pull(Listening(), "factory/app:v1", tmp_path / "again")
        assert json.loads((tmp_path / "again" / "index.json").read_text())["manifests"][0]["digest"] == digest
    finally:
        container.remove()
        dockerd.docker("volume", "rm", "-f", VOLUME, check=False)
