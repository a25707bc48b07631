"""The `resync` direct method and the reported registrySyncResult, with the real SDK under the simulated IoT Edge
runtime: a registry sync from scratch restores what the module lost and keeps what it has, reported Syncing then
Succeeded; Failed while the parent is away, taken up again by the engine (RecoveryService) once it is back; a new
sync token in the connection string is a SyncTokenUpdate; the result survives a restart of the module."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from connected_registry.auth.passwords import hash_password
from tests.edge.modules import MODULE_NAME, EdgeModule, connection_string, edge_module_under, module_desired
from tests.support.http import basic, request
from tests.support.oci import image_manifest
from tests.support.pki import TestPki
from tests.support.processes import wait_until
from tests.sync.hierarchy import sync_token_for
from tests.sync.instance_api import digest_at, lose_image_at, push_blob, push_small_image, put_manifest, status_of

LAYER_BYTES = 600_000  # at 200 kB/s the resync of the lost image takes about three seconds: Syncing is reported
# No window: the module follows the feed. No on-demand fills: what the module lost stays lost until a sync brings it.
CONTINUOUS = {"parent": {}, "onDemand": False}
SLOW_LINK = {"parent": {"bandwidth": {"maxBytesPerSecond": 200_000}}}


@pytest.fixture
def module(tmp_path: Path, edge_pki: TestPki, root):
    with edge_module_under(tmp_path, edge_pki, {**module_desired(), **CONTINUOUS}, root=root) as started:
        yield started


def result(reported: dict) -> dict:
    """A copy: the hub merges later patches into its reported document in place."""
    return dict(reported.get("registrySyncResult") or {})


def initial_sync_succeeded(module: EdgeModule) -> dict:
    module.hub.wait_reported(lambda r: result(r).get("syncTrigger") == "InitialSync"
                             and result(r).get("syncState") == "Succeeded", timeout=60, what="the initial sync")
    return result(module.hub.reported)


def states_reported_since(module: EdgeModule, since: int) -> list[str]:
    """The syncState values of the reported patches from index `since` on, in order."""
    return [patch["registrySyncResult"]["syncState"] for _, patch in module.hub.reported_patches[since:]
            if "syncState" in (patch.get("registrySyncResult") or {})]


def push_image_with_a_big_layer(root, repository: str) -> str:
    config, layer = json.dumps({"repository": repository}).encode(), os.urandom(LAYER_BYTES)
    for blob in (config, layer):
        push_blob(root, repository, blob)
    return put_manifest(root, repository, "v1", image_manifest(config, [layer]))


def restart_and_wait_for_report(module: EdgeModule) -> dict:
    """The module restarted on its volume; returns the registrySyncResult its first report after the start carries."""
    since = len(module.hub.reported_patches)
    module.process.restart()
    module.hub.wait_reported(lambda r: any("registrySyncResult" in patch for _, patch in
                                           module.hub.reported_patches[since:]),
                             timeout=60, what="a report after restart")
    return next(patch["registrySyncResult"] for _, patch in module.hub.reported_patches[since:]
                if "registrySyncResult" in patch)


def test_resync_restores_what_the_module_lost_keeps_the_rest_and_reports_syncing_then_succeeded(module: EdgeModule,
                                                                                               root):
    initial = initial_sync_succeeded(module)
    assert initial["lastSuccessfulSyncEndTime"] == initial["lastSyncEndTime"] >= initial["lastSyncStartTime"]
    kept = push_small_image(root, "factory/kept", "v1")
    lost = push_image_with_a_big_layer(root, "factory/lost")
    wait_until(lambda: digest_at(module.process, "factory/lost", "v1") == lost, timeout=60, what="the image synced")

    module.process.stop()
    lose_image_at(module.process.data_dir, "factory/lost", lost)
    assert restart_and_wait_for_report(module) == initial  # the result as it was: kept in the volume
    assert digest_at(module.process, "factory/lost", "v1") is None  # the feed has nothing more to say about it
    downloaded = status_of(module.process)["sync"]["bytesDownloaded"]
    version = module.hub.patch_desired(SLOW_LINK)
    module.hub.wait_reported(lambda r: r.get("appliedDesiredVersion") == version, timeout=30, what="the byte budget")

    since = len(module.hub.reported_patches)
    status, payload = module.hub.invoke_method("resync", timeout=5)
    assert status == 202 and len(payload["operationId"]) == 36, payload
    module.hub.wait_reported(lambda r: result(r).get("syncTrigger") == "ManualResync"
                             and result(r).get("syncState") == "Succeeded", timeout=60, what="the resync")
    states = states_reported_since(module, since)
    assert "Syncing" in states and states[-1] == "Succeeded", states
    assert states.index("Syncing") < len(states) - 1, states
    resynced = result(module.hub.reported)
    assert resynced["lastSuccessfulSyncEndTime"] > initial["lastSuccessfulSyncEndTime"]
    assert digest_at(module.process, "factory/lost", "v1") == lost and digest_at(module.process, "factory/kept",
                                                                                 "v1") == kept
    # only the lost image came down again (its layer and config), nothing of what the module kept
    assert LAYER_BYTES <= status_of(module.process)["sync"]["bytesDownloaded"] - downloaded < LAYER_BYTES + 1000


def test_a_resync_fails_while_the_parent_is_away_and_the_engine_recovers_it_when_it_returns(module: EdgeModule,
                                                                                            root):
    initial = initial_sync_succeeded(module)
    root.stop()
    status, payload = module.hub.invoke_method("resync", timeout=5)
    assert status == 202, payload
    module.hub.wait_reported(lambda r: result(r).get("syncState") == "Failed", timeout=60, what="the resync Failed")
    failed = result(module.hub.reported)
    assert failed["syncTrigger"] == "ManualResync"
    assert failed["lastSuccessfulSyncEndTime"] == initial["lastSuccessfulSyncEndTime"]

    root.process.restart()
    module.hub.wait_reported(lambda r: result(r).get("syncState") == "Succeeded", timeout=90, what="the recovery")
    recovered = result(module.hub.reported)
    assert recovered["syncTrigger"] == "RecoveryService"
    assert recovered["lastSuccessfulSyncEndTime"] > failed["lastSyncEndTime"]


def test_a_new_sync_token_is_a_sync_token_update(module: EdgeModule, root):
    initial = initial_sync_succeeded(module)
    assert restart_and_wait_for_report(module) == initial  # the same token: nothing to do again

    sync_name, _, entry = sync_token_for(MODULE_NAME)
    rotated = f"{MODULE_NAME}-rotated-sync-password"
    root.document["tokens"][sync_name] = {**entry, "passwordHashes": [*entry["passwordHashes"], hash_password(rotated)]}
    root.write_config()
    wait_until(lambda: request(f"{root.url}/v2/", headers=basic(sync_name, rotated)).status == 200, timeout=30,
               what="the parent to take the second password")
    new_string = connection_string(MODULE_NAME, root).replace(f"SyncTokenPassword={MODULE_NAME}-sync-password",
                                                              f"SyncTokenPassword={rotated}")
    assert rotated in new_string
    module.process.env = {**module.process.env, "ACR_REGISTRY_CONNECTION_STRING": new_string}
    restart_and_wait_for_report(module)
    module.hub.wait_reported(lambda r: result(r).get("syncTrigger") == "SyncTokenUpdate"
                             and result(r).get("syncState") == "Succeeded", timeout=60, what="the token's sync")
    assert result(module.hub.reported)["lastSuccessfulSyncEndTime"] > initial["lastSuccessfulSyncEndTime"]
