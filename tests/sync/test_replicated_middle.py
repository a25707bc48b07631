"""A middle layer run as two replicas (one PostgreSQL database, one data directory) between a root and a leaf: only
the replica holding the `sync` lease syncs with the root; SIGKILLed, its lease moves and the other replica syncs on
within 30 s, and the leaf, following the survivor's event feed, gets every push with no gap (issue 18, point 3)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.support.cluster import cluster_status
from tests.support.layouts import make_image
from tests.support.postgres import METADATA_DSN_VARIABLE, PostgresServer
from tests.support.processes import wait_until
from tests.sync.hierarchy import BOTH_TOP_TIERS, start_instance
from tests.sync.instance_api import digest_at, skopeo_push, status_of

pytestmark = BOTH_TOP_TIERS  # the parent's side on the embedded stores and as a scale-out replica


def _holder_of(dsn: str, lease: str) -> str | None:
    status = cluster_status(dsn)
    holder = status["leases"][lease]
    return next((replica["address"] for replica in status["replicas"] if replica["replica"] == holder), None)


def test_killing_the_sync_holder_moves_the_sync_and_the_leaf_misses_nothing(postgres: PostgresServer, tmp_path: Path):
    dsn = postgres.new_database()
    root = start_instance(tmp_path, "factory-root", children=[("plant-middle", "ReadOnly")])
    middles = [start_instance(tmp_path, "plant-middle", parent=root, repositories=["factory/*"],
                              children=[("line1-leaf", "ReadOnly")], extra={"onDemand": False},
                              env={METADATA_DSN_VARIABLE: dsn}) for _ in range(2)]
    leaf = None
    try:
        wait_until(lambda: _holder_of(dsn, "sync") is not None, timeout=15, what="a middle replica to hold the sync")
        holder_address = _holder_of(dsn, "sync")
        holder = next(middle for middle in middles if middle.host == holder_address)
        survivor = next(middle for middle in middles if middle is not holder)
        assert _holder_of(dsn, "twin-reporter") in {middle.host for middle in middles}
        leaf = start_instance(tmp_path, "line1-leaf", parent=survivor, repositories=["factory/*"],
                              extra={"onDemand": False}, env={METADATA_DSN_VARIABLE: None})
        layout = tmp_path / "layout"
        before, after = make_image(layout, "before"), make_image(layout, "after")

        skopeo_push(layout, "before", root, "factory/app:before")
        wait_until(lambda: digest_at(leaf, "factory/app", "before") == before, timeout=40,
                   what="the push before the kill at the leaf")

        killed_at = time.monotonic()
        holder.process.kill()
        wait_until(lambda: _holder_of(dsn, "sync") == survivor.host, timeout=30, interval=0.2,
                   what="the sync lease to move to the survivor")
        moved_after = time.monotonic() - killed_at
        skopeo_push(layout, "after", root, "factory/app:after")
        wait_until(lambda: digest_at(survivor, "factory/app", "after") == after, timeout=30,
                   what="the push after the kill at the surviving middle replica")
        synced_after = time.monotonic() - killed_at
        wait_until(lambda: digest_at(leaf, "factory/app", "after") == after, timeout=30,
                   what="the push after the kill at the leaf")
        print(f"sync lease moved {moved_after:.1f} s after the SIGKILL; the next push synced "
              f"{synced_after:.1f} s after it")
        assert synced_after < 30
        assert digest_at(leaf, "factory/app", "before") == before
        leaf_status = status_of(leaf)
        assert leaf_status["registrySyncResult"]["syncTrigger"] == "InitialSync"  # never a recovery: no gap
        assert "CURSOR_EXPIRED" not in json.dumps(leaf_status["statusDetails"])
    finally:
        for instance in ([leaf] if leaf else []) + middles + [root]:
            instance.stop()

