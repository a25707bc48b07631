"""A root and two module layers, each module under its own simulated IoT Edge runtime (one edgeHub broker per module,
on its own loopback address), configured only through their twins, as an operator deploys them:

    factory-root (a plain instance, --config)  <-  plant-mid (module, device A)  <-  API proxy (nginx, TLS with the edge
    CA's certificate)  <-  line1-leaf (module, device B, parent `$upstream:PORT`, trusting the edge CA's bundle)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.edge.modules import module_desired, start_module
from tests.support.clients import ApiProxy, skopeo
from tests.support.edge_runtime import EdgeRuntime
from tests.support.layouts import make_image
from tests.support.pki import make_pki
from tests.support.processes import wait_until
from tests.sync.hierarchy import READER, start_instance, sync_token_for
from tests.sync.instance_api import manifest_at, skopeo_push


def test_an_image_pushed_at_the_root_is_pulled_at_the_bottom_and_a_twin_patch_moves_its_schedule(tmp_path: Path):
    pki = make_pki(tmp_path / "pki", common_name="simulated IoT Edge root CA")
    root = start_instance(tmp_path, "factory-root", children=[("plant-mid", "ReadOnly")])
    parts: list = []
    try:
        mid_desired = {**module_desired(), "parent": {"endpoint": f"http://{root.host}"}}  # continuous sync
        mid_desired["tokens"] = {**mid_desired["tokens"], **dict([sync_token_for("line1-leaf")[::2]])}
        device_a = EdgeRuntime(tmp_path / "device-a", pki, module_id="connectedRegistry", device_id="device-a",
                               desired=mid_desired)
        parts.append(device_a)
        mid, _ = start_module(tmp_path, device_a, None, name="plant-mid")
        parts.append(mid)
        proxy = ApiProxy(tmp_path / "api-proxy", mid.host, pki)  # the parent device's IoTEdgeAPIProxy module
        parts.append(proxy)
        leaf_desired = {**module_desired(), "parent": {"endpoint": f"$upstream:{proxy.port}"}}  # https, edge CA
        device_b = EdgeRuntime(tmp_path / "device-b", pki, module_id="connectedRegistry", device_id="device-b",
                               desired=leaf_desired, parent_hostname="127.0.0.1")
        parts.append(device_b)
        assert device_a.address != device_b.address
        leaf, _ = start_module(tmp_path, device_b, None, name="line1-leaf")
        parts.append(leaf)

        for device in (device_a, device_b):
            device.hub.wait_reported(lambda r: r.get("activation", {}).get("status") == "Active", timeout=90,
                                     what="Active")
        assert device_b.hub.reported["parent"]["endpoint"] == f"https://127.0.0.1:{proxy.port}"

        layout = tmp_path / "layout"
        digest = make_image(layout, "v1")
        pushed = time.monotonic()
        skopeo_push(layout, "v1", root, "factory/app:v1")
        wait_until(lambda: (reply := manifest_at(leaf, "factory/app", "v1")) and
                   reply.headers["Docker-Content-Digest"] == digest, timeout=90, what="factory/app:v1 at the bottom")
        arrived = time.monotonic() - pushed
        # a device of the bottom layer pulls it, every blob included
        skopeo("copy", "--src-tls-verify=false", "--src-creds", f"{READER[0]}:{READER[1]}",
               f"docker://{leaf.host}/factory/app:v1", f"oci:{tmp_path / 'pulled'}:v1")
        pulled = json.loads((tmp_path / "pulled" / "index.json").read_text())["manifests"][0]["digest"]
        assert pulled == digest
        assert any("/v2/factory/app/" in uri for _, uri, _ in proxy.requests())  # through the API proxy, over TLS

        device_b.hub.patch_desired({"parent": {"syncProperties": {"schedule": "0 5 * * *", "syncWindow": "PT2H"}}})
        device_b.hub.wait_reported(lambda r: ((r.get("sync") or {}).get("nextWindowStart") or "").endswith("T05:00:00Z"),
                                   timeout=30, what="the bottom layer's new window")
        assert device_b.hub.reported["parent"]["syncProperties"]["schedule"] == "0 5 * * *"
        assert (device_a.hub.reported["sync"].get("nextWindowStart") is None  # the middle is untouched: continuous
                and device_a.hub.reported["parent"]["syncProperties"]["schedule"] == "* * * * *")
        print(f"\nMEASURE root push to bottom layer: {arrived:.2f} s")
    finally:
        for part in reversed(parts):
            part.stop()
        root.stop()
