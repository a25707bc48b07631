"""Outside IoT Edge the reported properties go to reported.json beside the --config file, at the same cadence."""

from __future__ import annotations

import json
from pathlib import Path

from tests.edge.modules import QUIET_SCHEDULE, QUIET_START
from tests.support.processes import wait_until
from tests.sync.hierarchy import start_instance


def _reported(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def test_reported_json_follows_activation_and_configuration_changes(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")])
    leaf = start_instance(tmp_path, "line1-leaf", parent=root, repositories=["factory/*"], extra={"$version": 3})
    try:
        reported_path = leaf.config_path.parent / "reported.json"
        wait_until(lambda: _reported(reported_path).get("activation", {}).get("status") == "Active", timeout=60,
                   what="reported.json with Active")
        reported = _reported(reported_path)
        assert reported["name"] == "line1-leaf" and reported["appliedDesiredVersion"] == 3
        assert reported["sync"]["nextWindowStart"] is None  # continuous: always in a window

        document = {**leaf.document, "$version": 4,
                    "parent": {**leaf.document["parent"],
                               "syncProperties": {"schedule": QUIET_SCHEDULE, "syncWindow": "PT1H"}}}
        leaf.write_config(document)
        wait_until(lambda: _reported(reported_path).get("appliedDesiredVersion") == 4, timeout=30,
                   what="reported.json with the new configuration")
        assert _reported(reported_path)["sync"]["nextWindowStart"].endswith(QUIET_START)

        leaf.write_config({**document, "$version": 5, "mode": "Sideways"})
        wait_until(lambda: any(d["code"] == "CONFIG_INVALID" for d in _reported(reported_path).get("statusDetails", [])),
                   timeout=30, what="CONFIG_INVALID in reported.json")
        assert _reported(reported_path)["appliedDesiredVersion"] == 4
    finally:
        leaf.stop()
        root.stop()
