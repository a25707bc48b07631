"""How the module starts and stops being what IoT Edge and IoT Hub see: edgeHub not up yet, a twin that does not
validate at start, deactivation through a direct method."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.edge.modules import MODULE_NAME, codes, edge_module_under, module_desired
from tests.support.edge_runtime import wait_for_module_exit
from tests.support.http import basic, request
from tests.support.pki import TestPki
from tests.support.processes import wait_until
from tests.sync.hierarchy import OPERATOR


def test_the_first_connection_is_retried_until_edgehub_is_up(tmp_path: Path, edge_pki: TestPki, root):
    with edge_module_under(tmp_path, edge_pki, module_desired(), root=root, wait=False, start_broker=False) as module:
        wait_until(lambda: "cannot reach edgeHub" in module.process.log(), timeout=30, what="a failed first connection")
        assert module.process.process.poll() is None  # it waits for edgeHub rather than exit
        module.runtime.start_broker()
        module.process.wait_ready(timeout=60)
        module.hub.wait_reported(lambda r: r.get("activation", {}).get("status") == "Active", timeout=60,
                                 what="Active once edgeHub is up")


def test_sigterm_stops_a_module_still_waiting_for_edgehub(tmp_path: Path, edge_pki: TestPki):
    with edge_module_under(tmp_path, edge_pki, module_desired(), root=None, wait=False, start_broker=False) as module:
        wait_until(lambda: "cannot reach edgeHub" in module.process.log(), timeout=30, what="a failed first connection")
        module.process.process.send_signal(signal.SIGTERM)
        wait_for_module_exit(module.process, timeout=10)
        assert module.process.process.returncode == 0, module.process.log()


def test_an_invalid_twin_at_start_is_reported_and_a_patch_that_fixes_it_starts_the_module(tmp_path: Path,
                                                                                         edge_pki: TestPki, root):
    desired = {**module_desired(), "mode": "ReadAndWrite", "colour": "blue"}
    with edge_module_under(tmp_path, edge_pki, desired, root=root, wait=False) as module:
        hub = module.hub
        hub.wait_reported(lambda r: "CONFIG_INVALID" in codes(r), timeout=60, what="CONFIG_INVALID before start")
        detail = next(d for d in hub.reported["statusDetails"] if d["code"] == "CONFIG_INVALID")
        assert "mode" in detail["description"] and hub.reported["connectionState"] == "Unhealthy"
        assert module.process.process.poll() is None
        version = hub.patch_desired({"mode": "ReadOnly"})
        module.process.wait_ready(timeout=60)
        hub.wait_reported(lambda r: r.get("activation", {}).get("status") == "Active"
                          and r.get("appliedDesiredVersion") == version and "CONFIG_INVALID" not in codes(r),
                          timeout=60, what="Active with the fixed twin")
        unknown = next(d for d in hub.reported["statusDetails"] if d["code"] == "CONFIG_UNKNOWN_KEYS")
        assert "colour" in unknown["description"] and unknown["severity"] == "Warning"


def test_the_deactivate_method_makes_the_name_inactive_at_the_parent(tmp_path: Path, edge_pki: TestPki, root):
    desired = {**module_desired(), "parent": None}  # continuous sync: it keeps calling the parent
    with edge_module_under(tmp_path, edge_pki, desired, root=root) as module:
        hub = module.hub
        hub.wait_reported(lambda r: r.get("activation", {}).get("status") == "Active", timeout=60, what="Active")
        status, payload = hub.invoke_method("deactivate", timeout=5)
        assert status == 200 and payload["status"] == "Inactive", payload
        children = request(f"{root.url}/acr/connected/v1/registries", headers=basic(*OPERATOR)).json()["children"]
        assert [c["activation"]["status"] for c in children if c["name"] == MODULE_NAME] == ["Inactive"]
        hub.wait_reported(lambda r: r.get("activation", {}).get("status") == "Inactive"
                          and "DEACTIVATED" in codes(r), timeout=60, what="Inactive with DEACTIVATED")
