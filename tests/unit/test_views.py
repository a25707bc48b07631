"""What `list` and `status` print, from documents shaped as SPEC 4 and 11 describe them."""

from __future__ import annotations

from datetime import datetime, timezone

from connected_registry.views import (ago, format_bytes, render_hierarchy, render_registry_sync, render_status,
                                      worst_detail)

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)


def detail(severity: str, code: str, description: str = "what happened and what to do") -> dict:
    return {"type": "Sync", "severity": severity, "code": code, "description": description,
            "timestamp": "2026-11-28T11:58:00Z"}


def report(name: str, mode: str, state: str = "Online", details=(), pending=0, rejected=0, parent=True) -> dict:
    return {"name": name, "mode": mode, "activation": {"status": "Active"}, "connectionState": state,
            "parent": {"endpoint": "http://p:8000"} if parent else None, "lastSyncTime": "2026-11-28T11:59:30Z",
            "sync": {"pendingUploads": pending, "rejectedUploads": rejected}, "statusDetails": list(details)}


def entry(document: dict, state: str | None = None, children=()) -> dict:
    return {"name": document["name"], "mode": document["mode"], "activation": document["activation"],
            "reportedAt": "2026-11-28T11:30:00Z", "report": document,
            "connectionState": state or document["connectionState"], "children": list(children)}


def tree() -> dict:
    leaf = entry(report("line1-leaf", "ReadOnly"))
    other = entry(report("line2-leaf", "ReadOnly", "Unhealthy", [detail("Warning", "PARENT_UNREACHABLE"),
                                                                 detail("Error", "DISK_STORAGE_FULL", "the disk is full: "
                                                                        "free space under /var/acr/data")]))
    middle = entry(report("line1-middle", "ReadWrite", pending=3, rejected=1),
                   state="Offline (stale since 2026-11-28T11:30:00Z)", children=[leaf])
    return {**report("factory-root", "ReadWrite", parent=False), "children": [middle, other]}


def test_the_tree_marks_stale_nodes_and_what_is_below_them():
    lines = render_hierarchy(tree(), 200, NOW).splitlines()
    assert lines[0].split()[:5] == ["NAME", "MODE", "ACTIVATION", "STATE", "LAST"]
    root, middle, leaf, other = lines[1:5]
    assert root.startswith("factory-root ") and " - " in root  # a root has no last sync
    assert middle.startswith("├─ line1-middle") and "STALE, silent 30m" in middle
    assert middle.split()[-2:] == ["3", "1"]  # pending and rejected uploads
    assert leaf.startswith("│  └─ line1-leaf") and "Online (stale above)" in leaf
    assert other.startswith("└─ line2-leaf") and "Unhealthy" in other
    assert other.endswith("DISK_STORAGE_FULL (Error, +1 more): the disk is full: free space under /var/acr/data")
    assert lines[-1] == "4 registries, 1 unhealthy, 1 stale"


def test_every_line_fits_the_width_given():
    for width in (60, 80, 100):
        assert all(len(line) <= width for line in render_hierarchy(tree(), width, NOW).splitlines())
    assert render_hierarchy(tree(), 80, NOW).splitlines()[4].endswith("…")


def test_worst_detail_ages_and_sizes():
    assert worst_detail([]) == ""
    assert worst_detail([detail("Information", "CURSOR_EXPIRED"), detail("Warning", "PARENT_UNREACHABLE")]) \
        .startswith("PARENT_UNREACHABLE (Warning, +1 more)")
    assert ago("2026-11-28T11:59:48Z", NOW) == "12s ago" and ago("2026-11-26T12:00:00Z", NOW) == "2d ago"
    assert ago(None, NOW) == "never"
    assert format_bytes(0) == "0 B" and format_bytes(1536) == "1.5 KiB" and format_bytes(3 << 30) == "3.0 GiB"


def test_status_lists_every_detail_most_severe_first_with_its_description():
    document = report("line2-leaf", "ReadOnly", "Unhealthy", [detail("Warning", "PARENT_UNREACHABLE"),
                                                              detail("Error", "DISK_STORAGE_FULL", "free space")])
    document["cache"] = {"hits": 3, "bytesServed": 2048}
    text = render_status(document, NOW)
    assert text.splitlines()[0].split() == ["line2-leaf", "ReadOnly", "Active", "Unhealthy"]
    assert text.index("DISK_STORAGE_FULL") < text.index("PARENT_UNREACHABLE")
    assert "      free space" in text and "details      2:" in text
    assert "cache        hits 3, bytesServed 2.0 KiB" in text
    assert "platforms" not in text  # every platform: nothing to say


def test_status_says_which_platforms_sync_and_what_that_saved():
    document = report("line2-leaf", "ReadOnly", "Online", [])
    document["sync"] = {"platforms": {"synced": ["linux/arm64", "linux/arm/v7"], "manifestsLeftOut": 4,
                                      "bytesSaved": 3 << 30}}
    assert "  platforms    linux/arm64, linux/arm/v7 only: 4 manifests left out, 3.0 GiB not downloaded" in \
        render_status(document, NOW)


def test_status_names_the_alternate_endpoint_in_use_and_why():
    document = report("line1-leaf", "ReadOnly")
    assert "in use" not in render_status(document, NOW)
    document["parent"].update(endpointInUse="http://p2:8000", lastEndpointSwitch={
        "from": "http://p:8000", "to": "http://p2:8000", "reason": "parent http://p:8000 is unreachable: refused",
        "time": "2026-11-28T11:59:00Z"})
    text = render_status(document, NOW)
    assert "  in use       http://p2:8000 (1m ago: parent http://p:8000 is unreachable: refused)" in text


def test_status_shows_the_parent_links_budget_when_one_is_set():
    document = report("line1-leaf", "ReadOnly")
    assert "bandwidth" not in render_status(document, NOW)  # unlimited, no windows: nothing to say
    document["parent"]["bandwidth"] = {"maxBytesPerSecond": 200_000, "windows": [{}], "effective": 1_000_000,
                                       "currentBytesPerSecond": 900_000, "bytesReceived": 3 << 30, "bytesSent": 0}
    assert ("  bandwidth    976.6 KiB/s now (1 window), using 878.9 KiB/s; 3.0 GiB received, 0 B sent"
            in render_status(document, NOW))


def test_status_shows_the_registry_sync_result_with_its_trigger_and_ages():
    document = report("line1-leaf", "ReadOnly")
    document["registrySyncResult"] = {"syncTrigger": "ManualResync", "syncState": "Succeeded",
                                      "lastSyncStartTime": "2026-11-28T11:59:00Z",
                                      "lastSyncEndTime": "2026-11-28T11:59:50Z",
                                      "lastSuccessfulSyncEndTime": "2026-11-28T11:59:50Z"}
    assert "  registry     Succeeded (ManualResync) 10s ago, last success 10s ago" in render_status(document, NOW)
    running = {**document["registrySyncResult"], "syncState": "Syncing", "syncTrigger": "RecoveryService"}
    assert render_registry_sync(running, NOW) == "Syncing (RecoveryService) 1m ago, last success 10s ago"
    pending = {"syncTrigger": "InitialSync", "syncState": "Pending", "lastSuccessfulSyncEndTime": None}
    assert render_registry_sync(pending, NOW) == "Pending (InitialSync), last success never"
    assert render_registry_sync(None, NOW) == "none yet"
