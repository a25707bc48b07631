"""A change of mode or name while Active is held back with CHANGE_NEEDS_DEACTIVATION; the rest applies (SPEC 3)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.sync.inprocess import FakeClock, eventually, start_root_for_leaf, start_runtime


async def test_mode_and_name_changes_wait_for_deactivation_while_the_rest_applies(tmp_path: Path, monkeypatch):
    clock = FakeClock()
    root, document = await start_root_for_leaf(tmp_path, clock, monkeypatch)
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    try:
        async def active():
            return leaf.engine.state.activation == "Active"

        await eventually(active, what="the leaf Active")
        changed = dict(document, mode="ReadWrite", name="line1-renamed", anonymousPull=True)
        (tmp_path / "leaf" / "desired.json").write_text(json.dumps(changed))

        async def held_back():
            return {d["code"]: d for d in leaf.status_document()["statusDetails"]}.get("CHANGE_NEEDS_DEACTIVATION")

        detail = await eventually(held_back, what="CHANGE_NEEDS_DEACTIVATION")
        assert detail["severity"] == "Warning" and "mode 'ReadWrite'" in detail["description"]
        assert "name 'line1-renamed'" in detail["description"]
        assert leaf.instance.mode == "ReadOnly" and leaf.instance.name == "line1-leaf"
        assert leaf.instance.settings.anonymousPull is True  # the rest of the same change applied

        (tmp_path / "leaf" / "desired.json").write_text(json.dumps(dict(document, anonymousPull=True)))

        async def cleared():
            return "CHANGE_NEEDS_DEACTIVATION" not in {d["code"] for d in leaf.status_document()["statusDetails"]}

        await eventually(cleared, what="the warning cleared when the change is withdrawn")
    finally:
        await leaf.stop()
        await root.stop()


async def test_a_cloned_data_volume_on_another_device_is_already_active(tmp_path: Path, monkeypatch):
    import shutil

    clock = FakeClock()
    root, document = await start_root_for_leaf(tmp_path, clock, monkeypatch)
    monkeypatch.setenv("IOTEDGE_DEVICEID", "line1-device")
    original = await start_runtime(tmp_path / "leaf", document, clock)
    clone = None
    try:
        async def active():
            return original.engine.state.activation == "Active"

        await eventually(active, what="the original Active")
        await original.stop()
        shutil.copytree(tmp_path / "leaf", tmp_path / "clone")  # the same instanceId on another device
        monkeypatch.setenv("IOTEDGE_DEVICEID", "other-device")
        clone = await start_runtime(tmp_path / "clone", document, clock)
        assert clone.instance.instance_id == original.instance.instance_id

        async def refused():
            return {d["code"] for d in clone.status_document()["statusDetails"]} & {"ALREADY_ACTIVE"}

        await eventually(refused, what="ALREADY_ACTIVE for the clone")
        assert clone.engine.state.activation == "Inactive"
    finally:
        if clone is not None:
            await clone.stop()
        await root.stop()
