"""The module configured by its twin and reporting through it, with the real azure-iot-device SDK against a simulated
IoT Edge runtime (workload API on a unix socket, mosquitto with TLS as edgeHub, a twin and method responder)."""

from __future__ import annotations

import json
import signal
import time
import urllib.request

from tests.edge.modules import (MODULE_NAME, OTHER_END_2H, OTHER_SCHEDULE, OTHER_START, QUIET_END,
                                QUIET_SCHEDULE, QUIET_START, EdgeModule, codes)
from tests.support.edge_runtime import wait_for_module_exit
from tests.support.http import basic, request
from tests.sync.hierarchy import WRITER


def _active_with_window(start: str):
    return lambda reported: (reported.get("activation", {}).get("status") == "Active"
                             and (reported.get("sync", {}).get("nextWindowStart") or "").endswith(start))


def test_module_configures_itself_from_the_twin_and_reports_active_with_its_next_window(edge_module: EdgeModule):
    hub = edge_module.hub
    hub.wait_reported(_active_with_window(QUIET_START), timeout=60, what="Active with its window")
    active_after = hub.reported_patches[-1][0] - edge_module.started
    reported = hub.reported
    assert reported["name"] == MODULE_NAME  # from ConnectedRegistryName: the twin has no name
    assert reported["mode"] == "ReadOnly"
    assert reported["appliedDesiredVersion"] == 1
    assert reported["parent"]["syncProperties"]["schedule"] == QUIET_SCHEDULE
    assert reported["sync"]["nextWindowEnd"].endswith(QUIET_END)
    assert reported["connectionState"] == "Offline"  # outside its window
    # the SDK took its trust bundle and SAS signature from the workload API
    paths = [path for _, path in edge_module.runtime.workload.requests]
    assert any(path.startswith("/trust-bundle") for path in paths)
    assert any(path.startswith("/modules/connectedRegistry/genid/gen1/sign") for path in paths)
    # the same document is the live view
    with urllib.request.urlopen(urllib.request.Request(
            f"{edge_module.process.url}/acr/connected/v1/status",
            headers={"Authorization": "Basic cmVhZGVyMTpyZWFkZXItcGFzc3dvcmQ="}), timeout=10) as response:
        live = json.load(response)
    assert live["activation"]["status"] == "Active" and live["appliedDesiredVersion"] == 1
    print(f"\nMEASURE module start to reported Active: {active_after:.2f} s")


def test_a_schedule_patch_moves_the_reported_window_without_a_restart(edge_module: EdgeModule):
    hub = edge_module.hub
    hub.wait_reported(_active_with_window(QUIET_START), timeout=60, what="Active with its window")
    pid = edge_module.process.pid
    sent = time.monotonic()
    version = hub.patch_desired({"parent": {"syncProperties": {"schedule": OTHER_SCHEDULE, "syncWindow": "PT2H"}}})
    hub.wait_reported(lambda r: (r.get("sync", {}).get("nextWindowStart") or "").endswith(OTHER_START)
                      and r.get("appliedDesiredVersion") == version, timeout=30, what="the new window")
    moved_after = hub.reported_patches[-1][0] - sent
    assert hub.reported["sync"]["nextWindowEnd"].endswith(OTHER_END_2H)
    assert hub.reported["parent"]["syncProperties"]["schedule"] == OTHER_SCHEDULE
    assert edge_module.process.process.poll() is None and edge_module.process.pid == pid
    print(f"\nMEASURE desired patch to reported change: {moved_after * 1000:.0f} ms")


def test_an_invalid_patch_is_reported_and_the_old_schedule_keeps_running(edge_module: EdgeModule):
    hub = edge_module.hub
    hub.wait_reported(_active_with_window(QUIET_START), timeout=60, what="Active with its window")
    hub.patch_desired({"parent": {"syncProperties": {"schedule": OTHER_SCHEDULE, "syncWindow": "PT10M"}}})
    hub.wait_reported(lambda r: "CONFIG_INVALID" in codes(r), timeout=30, what="CONFIG_INVALID")
    detail = next(d for d in hub.reported["statusDetails"] if d["code"] == "CONFIG_INVALID")
    assert "parent.syncProperties.syncWindow" in detail["description"] and detail["severity"] == "Error"
    assert hub.reported["appliedDesiredVersion"] == 1
    assert hub.reported["sync"]["nextWindowStart"].endswith(QUIET_START)  # the old schedule runs on
    assert hub.reported["parent"]["syncProperties"]["schedule"] == QUIET_SCHEDULE
    assert hub.reported["connectionState"] == "Unhealthy"
    # the next patch completes the raw document (merged with the bad one): now it validates and applies
    version = hub.patch_desired({"parent": {"syncProperties": {"syncWindow": "PT2H"}}})
    hub.wait_reported(lambda r: r.get("appliedDesiredVersion") == version and "CONFIG_INVALID" not in codes(r),
                      timeout=30, what="the fixed document applied")
    assert hub.reported["sync"]["nextWindowStart"].endswith(OTHER_START)


def test_a_full_redelivery_of_the_desired_document_changes_nothing(edge_module: EdgeModule):
    hub = edge_module.hub
    hub.wait_reported(_active_with_window(QUIET_START), timeout=60, what="Active with its window")
    before = {key: json.dumps(hub.reported.get(key), sort_keys=True) for key in ("parent", "activation")}
    hub.redeliver_desired()  # what the SDK hands over after a reconnect: the whole document, same $version
    version = hub.patch_desired({"logging": {"logLevel": "Information"}})  # published after it: handled after it
    hub.wait_reported(lambda r: r.get("appliedDesiredVersion") == version, timeout=30, what="the next patch applied")
    log = edge_module.process.log()
    assert "desired $version 1 is not newer than the $version 1 held here" in log
    assert "applied desired $version 1 " not in log and f"applied desired $version {version} " in log
    assert not codes(hub.reported) & {"CONFIG_INVALID", "CONFIG_UNKNOWN_KEYS", "CHANGE_NEEDS_DEACTIVATION"}
    versions = [patch["appliedDesiredVersion"] for _, patch in hub.reported_patches if "appliedDesiredVersion" in patch]
    assert versions == sorted(versions), versions
    after = {key: json.dumps(hub.reported.get(key), sort_keys=True) for key in ("parent", "activation")}
    assert after == before
    assert hub.reported["sync"]["nextWindowStart"].endswith(QUIET_START)


def test_changes_made_while_edgehub_was_away_arrive_when_the_module_is_back(edge_module: EdgeModule):
    hub = edge_module.hub
    hub.wait_reported(_active_with_window(QUIET_START), timeout=60, what="Active with its window")
    manifests = f"{edge_module.process.url}/v2/factory/app/manifests/v1"
    assert request(manifests, headers=basic(*WRITER)).status == 404  # the writer token is known: the image is not
    edge_module.runtime.broker.stop()
    hub.patch_desired_while_away({"tokens": {WRITER[0]: None}})  # two updates IoT Hub never notified
    version = hub.patch_desired_while_away({"parent": {"syncProperties": {"schedule": OTHER_SCHEDULE,
                                                                          "syncWindow": "PT2H"}}})
    edge_module.runtime.broker.start()
    hub.wait_reported(lambda r: r.get("appliedDesiredVersion") == version
                      and (r["sync"].get("nextWindowStart") or "").endswith(OTHER_START), timeout=60,
                      what="the twin read again after the reconnect")
    assert request(manifests, headers=basic(*WRITER)).status == 401  # the whole document replaced: the token is gone
    assert "CONFIG_INVALID" not in codes(hub.reported)


def test_a_mode_change_while_active_is_held_back_and_reported(edge_module: EdgeModule):
    hub = edge_module.hub
    hub.wait_reported(_active_with_window(QUIET_START), timeout=60, what="Active with its window")
    version = hub.patch_desired({"mode": "ReadWrite", "parent": {"syncProperties": {"schedule": OTHER_SCHEDULE,
                                                                                    "syncWindow": "PT2H"}}})
    hub.wait_reported(lambda r: "CHANGE_NEEDS_DEACTIVATION" in codes(r) and r.get("appliedDesiredVersion") == version,
                      timeout=30, what="CHANGE_NEEDS_DEACTIVATION")
    detail = next(d for d in hub.reported["statusDetails"] if d["code"] == "CHANGE_NEEDS_DEACTIVATION")
    assert "ReadWrite" in detail["description"] and "deactivate" in detail["description"]
    assert hub.reported["mode"] == "ReadOnly"
    assert hub.reported["sync"]["nextWindowStart"].endswith(OTHER_START)  # the rest of the patch applied


def test_direct_methods_answer_within_five_seconds(edge_module: EdgeModule):
    hub = edge_module.hub
    hub.wait_reported(_active_with_window(QUIET_START), timeout=60, what="Active with its window")
    started = time.monotonic()
    status, payload = hub.invoke_method("status", timeout=5)
    assert status == 200 and payload["name"] == MODULE_NAME and payload["activation"]["status"] == "Active"
    status, payload = hub.invoke_method("syncNow", timeout=5)
    assert status == 202 and payload["status"] == 202 and len(payload["operationId"]) == 36
    status, payload = hub.invoke_method("gc", {}, timeout=5)
    assert status == 202 and payload["operationId"]
    status, payload = hub.invoke_method("reboot", timeout=5)
    assert status == 404 and "syncNow" in payload["message"]
    elapsed = time.monotonic() - started
    # syncNow syncs outside the window: the root answered, so the last sync time is reported
    hub.wait_reported(lambda r: r.get("lastSyncTime"), timeout=30, what="a sync after syncNow")
    print(f"\nMEASURE four direct methods answered in {elapsed * 1000:.0f} ms")


def test_sigterm_stops_the_module_cleanly_within_ten_seconds(edge_module: EdgeModule):
    hub = edge_module.hub
    hub.wait_reported(_active_with_window(QUIET_START), timeout=60, what="Active with its window")
    edge_module.process.process.send_signal(signal.SIGTERM)
    took = wait_for_module_exit(edge_module.process, timeout=10)
    assert edge_module.process.process.returncode == 0, edge_module.process.log()
    assert "connected registry stopped" in edge_module.process.log()
    assert hub.reported["connectionState"] == "Offline"  # its last report: not left showing Online
    print(f"\nMEASURE SIGTERM to exit: {took:.2f} s")
