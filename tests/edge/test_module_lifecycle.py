"""How the module starts and stops being what IoT Edge and IoT Hub see: edgeHub not up yet, a twin that does not
validate at start, deactivation through a direct method."""

from __future__ import annotations

from pathlib import Path

from tests.edge.modules import MODULE_NAME, module_desired, start_module
from tests.support.edge_runtime import EdgeRuntime
from tests.support.pki import TestPki
from tests.support.processes import wait_until
from tests.sync.hierarchy import start_instance


def _codes(reported: dict) -> set[str]:
    return {detail["code"] for detail in reported.get("statusDetails") or []}


def test_the_first_connection_is_retried_until_edgehub_is_up(tmp_path: Path, edge_pki: TestPki):
    root = start_instance(tmp_path, "factory-root", children=[(MODULE_NAME, "ReadOnly")])
    runtime = EdgeRuntime(tmp_path / "edge", edge_pki, desired=module_desired(), start_broker=False)
    process = None
    try:
        process, _ = start_module(tmp_path, runtime, root, wait=False)
        wait_until(lambda: "cannot reach edgeHub" in process.log(), timeout=30, what="a failed first connection")
        assert process.process.poll() is None  # it waits for edgeHub rather than exit
        runtime.start_broker()
        process.wait_ready(timeout=60)
        runtime.hub.wait_reported(lambda r: r.get("activation", {}).get("status") == "Active", timeout=60,
                                  what="Active once edgeHub is up")
    finally:
        if process is not None:
            process.stop()
        runtime.stop()
        root.stop()


def test_sigterm_stops_a_module_still_waiting_for_edgehub(tmp_path: Path, edge_pki: TestPki):
    import signal

    from tests.support.edge_runtime import wait_for_module_exit

    runtime = EdgeRuntime(tmp_path / "edge", edge_pki, desired=module_desired(), start_broker=False)
    process = None
    try:
        process, _ = start_module(tmp_path, runtime, None, wait=False)
        wait_until(lambda: "cannot reach edgeHub" in process.log(), timeout=30, what="a failed first connection")
        process.process.send_signal(signal.SIGTERM)
        wait_for_module_exit(process, timeout=10)
        assert process.process.returncode == 0, process.log()
    finally:
        if process is not None:
            process.stop()
        runtime.stop()


def test_an_invalid_twin_at_start_is_reported_and_a_patch_that_fixes_it_starts_the_module(tmp_path: Path,
                                                                                         edge_pki: TestPki):
    root = start_instance(tmp_path, "factory-root", children=[(MODULE_NAME, "ReadOnly")])
    desired = {**module_desired(), "mode": "ReadAndWrite", "colour": "blue"}
    runtime = EdgeRuntime(tmp_path / "edge", edge_pki, desired=desired)
    process = None
    try:
        process, _ = start_module(tmp_path, runtime, root, wait=False)
        hub = runtime.hub
        hub.wait_reported(lambda r: "CONFIG_INVALID" in _codes(r), timeout=60, what="CONFIG_INVALID before start")
        detail = next(d for d in hub.reported["statusDetails"] if d["code"] == "CONFIG_INVALID")
        assert "mode" in detail["description"] and hub.reported["connectionState"] == "Unhealthy"
        assert process.process.poll() is None
        version = hub.patch_desired({"mode": "ReadOnly"})
        process.wait_ready(timeout=60)
        hub.wait_reported(lambda r: r.get("activation", {}).get("status") == "Active"
                          and r.get("appliedDesiredVersion") == version and "CONFIG_INVALID" not in _codes(r),
                          timeout=60, what="Active with the fixed twin")
        unknown = next(d for d in hub.reported["statusDetails"] if d["code"] == "CONFIG_UNKNOWN_KEYS")
        assert "colour" in unknown["description"] and unknown["severity"] == "Warning"
    finally:
        if process is not None:
            process.stop()
        runtime.stop()
        root.stop()


def test_the_deactivate_method_makes_the_name_inactive_at_the_parent(tmp_path: Path, edge_pki: TestPki):
    from tests.sync.hierarchy import OPERATOR
    from tests.support.http import basic, request

    root = start_instance(tmp_path, "factory-root", children=[(MODULE_NAME, "ReadOnly")])
    desired = {**module_desired(), "parent": None}  # continuous sync: it keeps calling the parent
    runtime = EdgeRuntime(tmp_path / "edge", edge_pki, desired=desired)
    process = None
    try:
        process, _ = start_module(tmp_path, runtime, root)
        hub = runtime.hub
        hub.wait_reported(lambda r: r.get("activation", {}).get("status") == "Active", timeout=60, what="Active")
        status, payload = hub.invoke_method("deactivate", timeout=5)
        assert status == 200 and payload["status"] == "Inactive", payload
        children = request(f"{root.url}/acr/connected/v1/registries", headers=basic(*OPERATOR)).json()["children"]
        assert [c["activation"]["status"] for c in children if c["name"] == MODULE_NAME] == ["Inactive"]
        hub.wait_reported(lambda r: r.get("activation", {}).get("status") == "Inactive"
                          and "DEACTIVATED" in _codes(r), timeout=60, what="Inactive with DEACTIVATED")
    finally:
        if process is not None:
            process.stop()
        runtime.stop()
        root.stop()
