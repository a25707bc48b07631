"""The root's view of the hierarchy (SPEC 11): children with their reports; a silent child shows as stale."""

from __future__ import annotations

from pathlib import Path

from tests.sync.inprocess import FakeClock, eventually, start_root_for_leaf, start_runtime


async def test_a_child_silent_for_three_report_intervals_shows_stale(tmp_path: Path, monkeypatch):
    clock = FakeClock()
    root, document = await start_root_for_leaf(tmp_path, clock, monkeypatch)
    leaf = await start_runtime(tmp_path / "leaf", document, clock)
    try:
        async def reported():
            children = root.hierarchy()["children"]
            return children if children and children[0]["reportedAt"] else None

        children = await eventually(reported, what="the leaf's first report at the root")
        assert children[0]["name"] == "line1-leaf" and children[0]["connectionState"] in ("Online", "Syncing")
        assert children[0]["activation"]["status"] == "Active"
        await leaf.stop()
        leaf = None
        clock.advance(4 * 300)  # the root's reportInterval is the default PT5M: three intervals have passed
        state = root.hierarchy()["children"][0]["connectionState"]
        assert state.startswith("Offline (stale since ") and children[0]["reportedAt"] in state
    finally:
        if leaf is not None:
            await leaf.stop()
        await root.stop()
