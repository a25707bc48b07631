"""`connected-registry resync` on running instances: a registry sync from scratch that restores what the child lost
and keeps what it has, reported in registrySyncResult with its trigger, state and times, kept across a restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from connected_registry.storage import RegistryStore

from tests.cli.test_sync_now_and_gc import outside_any_window
from tests.support.http import basic, request
from tests.support.processes import run_cli
from tests.sync.hierarchy import OPERATOR, READER, start_instance, sync_token_for
from tests.sync.instance_api import digest_at, lose_image_at, operator_cli, push_small_image, status_of

# push_small_image's blobs for factory/two:v1: its config and its one layer
TWO_BYTES = len(json.dumps({"repository": "factory/two", "tag": "v1"}).encode()) + len(b"layer of factory/two")


def registry_sync(instance) -> dict:
    return status_of(instance)["registrySyncResult"]


def feed_head(parent, child) -> int:
    """Where the parent's event feed for `child` goes on from now (what a child reads before a full reconcile)."""
    name, password, _ = sync_token_for(child.name)
    instance_id = status_of(child)["activation"]["instanceId"]
    answer = request(f"{parent.url}/acr/connected/v1/registries/{child.name}/events", headers={
        **basic(name, password), "X-Instance-Id": instance_id})
    assert answer.status == 200, answer.body
    return answer.json()["next"]


async def set_cursor(data_dir: Path, cursor: int) -> None:
    async with RegistryStore(str(data_dir)) as store:
        await store.control.update_state(sync_cursor=cursor)


def test_resync_restores_what_the_child_lost_keeps_what_it_has_and_reports_its_result(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")])
    leaf = start_instance(tmp_path, "line1-leaf", parent=root, repositories=["factory/*"],
                          parent_settings={"syncProperties": outside_any_window()}, extra={"onDemand": False})
    try:
        assert registry_sync(leaf) == {"syncTrigger": "InitialSync", "syncState": "Pending", "lastSyncStartTime": None,
                                       "lastSyncEndTime": None, "lastSuccessfulSyncEndTime": None}
        one, two = push_small_image(root, "factory/one", "v1"), push_small_image(root, "factory/two", "v1")
        assert operator_cli(leaf, "sync-now").returncode == 0  # the initial sync, owed since activation, runs in it
        initial = registry_sync(leaf)
        assert initial["syncTrigger"] == "InitialSync" and initial["syncState"] == "Succeeded"
        assert initial["lastSuccessfulSyncEndTime"] == initial["lastSyncEndTime"] >= initial["lastSyncStartTime"]

        leaf.stop()
        lose_image_at(leaf.process.data_dir, "factory/two", two)
        asyncio.run(set_cursor(leaf.process.data_dir, 10_000))  # a cursor past the parent's head: its log was reset
        leaf.process.restart()
        assert digest_at(leaf, "factory/two", "v1") is None and digest_at(leaf, "factory/one", "v1") == one

        result = operator_cli(leaf, "resync")
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith("resync (a registry sync from scratch) started (operation "), result.stdout
        # only what was lost came down: factory/one was kept, not copied again
        assert "resync finished in " in result.stdout and f"2 repositories checked, {TWO_BYTES} B downloaded" \
            in result.stdout, result.stdout
        assert lines[-1].startswith("registry sync: Succeeded (ManualResync) "), result.stdout
        assert digest_at(leaf, "factory/two", "v1") == two and digest_at(leaf, "factory/one", "v1") == one
        resynced = registry_sync(leaf)
        assert resynced["syncTrigger"] == "ManualResync" and resynced["syncState"] == "Succeeded"
        assert resynced["lastSuccessfulSyncEndTime"] > initial["lastSuccessfulSyncEndTime"]
        assert status_of(leaf)["sync"]["cursor"] == feed_head(root, leaf)  # the feed goes on from the parent's head
        assert "registry     Succeeded (ManualResync)" in operator_cli(leaf, "status").stdout

        assert operator_cli(leaf, "sync-now").returncode == 0
        assert registry_sync(leaf) == resynced  # a sync-now is no registry sync: the result stays
        leaf.process.restart()
        assert registry_sync(leaf) == resynced  # kept in the data volume

        root.stop()
        failed = operator_cli(leaf, "resync")
        assert failed.returncode == 1 and "the resync failed" in failed.stderr and "unreachable" in failed.stderr, \
            failed.stdout + failed.stderr
        assert "registry sync: Failed (ManualResync)" in failed.stdout, failed.stdout
        assert registry_sync(leaf)["lastSuccessfulSyncEndTime"] == resynced["lastSuccessfulSyncEndTime"]

        root.process.restart()  # the engine takes the failed resync up again itself, at the next round
        assert operator_cli(leaf, "sync-now").returncode == 0
        recovered = registry_sync(leaf)
        assert recovered["syncTrigger"] == "RecoveryService" and recovered["syncState"] == "Succeeded"
        assert recovered["lastSuccessfulSyncEndTime"] > resynced["lastSuccessfulSyncEndTime"]
    finally:
        leaf.stop()
        root.stop()


def test_resync_needs_the_gateway_rights_and_a_root_has_nothing_to_resync(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")])
    leaf = start_instance(tmp_path, "line1-leaf", parent=root, repositories=["factory/*"],
                          parent_settings={"syncProperties": outside_any_window()})
    try:
        refused = run_cli("resync", "--registry", leaf.url, "--username", READER[0], "--password", READER[1])
        assert refused.returncode == 1
        assert "(403)" in refused.stderr and "gateway/line1-leaf/config/write" in refused.stderr, refused.stderr
        assert registry_sync(leaf)["syncState"] == "Pending"  # nothing started

        on_root = operator_cli(root, "resync")
        assert on_root.returncode == 0 and "factory-root is a root: it has no parent to sync with" in on_root.stdout
        answer = request(f"{root.url}/acr/connected/v1/resync", "POST", b"", basic(*OPERATOR))
        assert answer.status == 400 and "factory-root is a root" in answer.json()["errors"][0]["message"]
        assert status_of(root)["registrySyncResult"] is None

        started = operator_cli(leaf, "resync", "--no-wait")
        assert started.returncode == 0 and started.stdout.startswith("resync (a registry sync from scratch) started")
    finally:
        leaf.stop()
        root.stop()
