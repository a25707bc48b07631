"""The root's view of the hierarchy (SPEC 11): children with their reports; a silent child shows as stale."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.http import basic, request
from tests.support.raw_client import call
from tests.sync.hierarchy import BOTH_TOP_TIERS, OPERATOR, start_instance, sync_token_for
from tests.sync.inprocess import FakeClock, eventually, start_root_for_leaf, start_runtime


async def test_a_child_silent_for_three_report_intervals_shows_stale(tmp_path: Path, monkeypatch):
    clock = FakeClock()
    root, document = await start_root_for_leaf(tmp_path, clock, monkeypatch)
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    try:
        async def reported():
            children = root.views.hierarchy()["children"]
            return children if children and children[0]["reportedAt"] else None

        children = await eventually(reported, what="the leaf's first report at the root")
        assert children[0]["name"] == "line1-leaf" and children[0]["connectionState"] in ("Online", "Syncing")
        assert children[0]["activation"]["status"] == "Active"
        await leaf.stop()
        leaf = None
        clock.advance(4 * 300)  # the root's reportInterval is the default PT5M: three intervals have passed
        state = root.views.hierarchy()["children"][0]["connectionState"]
        assert state.startswith("Offline (stale since ") and children[0]["reportedAt"] in state
    finally:
        if leaf is not None:
            await leaf.stop()
        await root.stop()


@BOTH_TOP_TIERS  # the root is a `serve` process here (the test above runs in-process)
def test_a_report_of_a_large_subtree_is_read_whole_up_to_its_cap(tmp_path: Path):
    """A child's report above the ~200 KB that one read of the body used to take (here 250 grandchildren, each
    with its own report) is accepted and shown whole; one over the 1 MiB cap, sent without a Content-Length, is
    413 naming the cap."""
    child = "line1-middle"
    root = start_instance(tmp_path, "factory-root", children=[(child, "ReadWrite")])
    try:
        sync_name, sync_password, _ = sync_token_for(child, "ReadWrite")
        instance_id = "11111111-2222-3333-4444-555555555555"
        sync = {**basic(sync_name, sync_password), "Content-Type": "application/json", "X-Instance-Id": instance_id}
        base = f"{root.url}/acr/connected/v1/registries/{child}"
        activation = {"instanceId": instance_id, "deviceId": "edge-1", "mode": "ReadWrite", "version": "0.1.0",
                      "messageTtl": "P2D", "repositories": ["factory/*"]}
        reply = request(f"{base}/activate", "POST", json.dumps(activation).encode(), sync)
        assert reply.status == 200, reply.body
        # What an instance reports is its status document and its children's entries (Runtime.hierarchy).
        status = request(f"{root.url}/acr/connected/v1/status", headers=basic(*OPERATOR)).json()
        grandchildren = [
            {"name": f"line1-leaf{index:03}", "mode": "ReadOnly",
             "activation": {"status": "Active", "instanceId": f"00000000-0000-0000-0000-{index:012}",
                            "deviceId": f"edge-leaf-{index}", "since": status["lastActivityTime"]},
             "reportedAt": status["lastActivityTime"], "connectionState": "Online", "children": [],
             "report": dict(status, name=f"line1-leaf{index:03}", mode="ReadOnly")}
            for index in range(250)]
        report = dict(status, name=child, mode="ReadWrite", activation={"status": "Active", "instanceId": instance_id},
                      children=grandchildren)
        body = json.dumps(report).encode()
        assert 200_000 < len(body) < 1 << 20
        reply = request(f"{base}/status", "POST", body, sync)
        assert reply.status == 204, reply.body
        tree = request(f"{root.url}/acr/connected/v1/registries", headers=basic(*OPERATOR)).json()
        assert [entry["name"] for entry in tree["children"][0]["children"]] == [g["name"] for g in grandchildren]

        too_large = call(root.process.port, "POST", f"/acr/connected/v1/registries/{child}/status", headers=sync,
                         chunks=[body] * 4)
        assert too_large.status == 413 and b"1 MiB" in too_large.body, too_large.describe()
    finally:
        root.stop()
