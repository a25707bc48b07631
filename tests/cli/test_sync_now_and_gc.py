"""`sync-now` and `gc` on running instances: operator rights on the instance's own name, progress while content
moves, the result at the end."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from tests.support.layouts import make_image
from tests.support.processes import run_cli
from tests.sync.hierarchy import READER, start_instance
from tests.sync.instance_api import manifest_at, operator_cli, skopeo_push


def outside_any_window() -> dict:
    """A one-hour window twelve hours away: the child syncs only when told to."""
    hour = (datetime.now(timezone.utc).hour + 12) % 24
    return {"schedule": f"0 {hour} * * *", "syncWindow": "PT1H"}


def test_sync_now_shows_repositories_and_bytes_and_ends_with_a_summary(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")])
    leaf = start_instance(tmp_path, "line1-leaf", parent=root, repositories=["factory/*"])
    try:
        leaf.document["parent"]["syncProperties"] = outside_any_window()
        leaf.document["onDemand"] = False  # a GET at the leaf must not fill the content itself: the sync brings it
        leaf.write_config()
        leaf.process.restart()
        layout = tmp_path / "layout"
        for repository in ("one", "two"):
            make_image(layout, repository, layers=1, size="512K")
            skopeo_push(layout, repository, root, f"factory/{repository}:v1")
        assert manifest_at(leaf, "factory/one", "v1") is None  # outside its window, nothing came by itself

        result = operator_cli(leaf, "sync-now")
        assert result.returncode == 0, result.stdout + result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith("sync started (operation "), result.stdout
        assert any(re.match(r"\s+Succeeded\s+2/2 repositories\s+1\.\d MiB down\s+0 B up", line) for line in lines), \
            result.stdout
        summary = re.search(r"sync finished in [\d.]+ s: 2 repositories checked, (1\.\d) MiB downloaded, 0 B uploaded",
                            lines[-1])
        assert summary, result.stdout
        assert manifest_at(leaf, "factory/one", "v1") and manifest_at(leaf, "factory/two", "v1")

        again = operator_cli(leaf, "sync-now")
        assert again.returncode == 0 and "2 repositories checked, 0 B downloaded" in again.stdout, again.stdout

        status = json.loads(operator_cli(leaf, "status", "--json").stdout)
        assert status["sync"]["operation"]["state"] == "Succeeded" and status["sync"]["bytesDownloaded"] > 1 << 20

        root.stop()
        failed = operator_cli(leaf, "sync-now")
        assert failed.returncode == 1 and "the sync failed" in failed.stderr and "unreachable" in failed.stderr, \
            failed.stdout + failed.stderr
    finally:
        leaf.stop()
        root.stop()


def test_sync_now_needs_the_gateway_rights_and_a_root_has_nothing_to_sync(hierarchy):
    refused = run_cli("sync-now", "--registry", hierarchy.leaf.url, "--username", READER[0], "--password", READER[1])
    assert refused.returncode == 1
    assert "(403)" in refused.stderr and "gateway/line1-leaf/config/write" in refused.stderr, refused.stderr
    root = operator_cli(hierarchy.root, "sync-now")
    assert root.returncode == 0 and "factory-root is a root: it has no parent to sync with" in root.stdout
    started = operator_cli(hierarchy.middle, "sync-now", "--no-wait")
    assert started.returncode == 0 and started.stdout.startswith("sync started (operation "), started.stdout


def test_gc_runs_on_the_running_instance_and_reports_what_it_removed(hierarchy):
    result = operator_cli(hierarchy.middle, "gc")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"garbage collection on line1-middle: \d+ blobs \([\d.]+ \w+\), \d+ manifests, \d+ abandoned "
                        r"uploads and \d+ stray files removed\n", result.stdout), result.stdout
    run = json.loads(operator_cli(hierarchy.middle, "status", "--json").stdout)["garbageCollection"]["lastRun"]
    assert run["state"] == "Succeeded" and run["blobsRemoved"] == 0 and run["finishedAt"]
    as_json = json.loads(operator_cli(hierarchy.middle, "gc", "--json").stdout)
    assert as_json["operationId"] != run["operationId"] and as_json["state"] == "Succeeded"
    refused = run_cli("gc", "--registry", hierarchy.middle.url, "--username", READER[0], "--password", READER[1])
    assert refused.returncode == 1 and "gateway/<the instance's name>/config/write" in refused.stderr, refused.stderr
