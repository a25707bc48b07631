"""The parent link's byte budget (issue 16, item 1), measured at the parent: a real `serve` parent, a child that
reaches it through tests/support/link_meter.py, which notes when each body's bytes cross. A capped sync keeps to
`parent.bandwidth.maxBytesPerSecond`; a window changes the rate at its start; a twin change applies to a transfer
in flight; a device's on-demand pull goes before a background sync; uploads keep to the same budget while the
feed's small calls still go through."""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.support.link_meter import LinkMeter
from tests.support.metrics import scrape, value
from tests.support.oci import image_manifest
from tests.support.processes import wait_until
from tests.sync.hierarchy import READER, start_instance, sync_token_for
from tests.sync.inprocess import FakeClock, eventually, set_clock, start_runtime
from tests.sync.instance_api import digest_at, push_blob, put_manifest, push_small_image, status_of

MB = 1_000_000
SMALL_BODIES = 64 << 10  # what a sync counts beside its blobs: manifests, a config
MiB = 1 << 20
TOLERANCE = 0.10  # the issue's: within 10 % of maxBytesPerSecond
NEW_RATE_IN_FORCE = 0.75  # of a new, four times higher limit: the old one cannot give it (a shared CI host may lag)


def push_image(instance, repository: str, tag: str, layer_size: int) -> tuple[str, str]:
    """An image with one random layer of `layer_size` bytes; returns (manifest digest, layer digest)."""
    config, layer = json.dumps({"repository": repository, "tag": tag}).encode(), os.urandom(layer_size)
    push_blob(instance, repository, config)
    layer_digest = push_blob(instance, repository, layer)
    return put_manifest(instance, repository, tag, image_manifest(config, [layer])), layer_digest


@pytest.fixture
def parent(tmp_path: Path):
    """A root with the sync tokens of a ReadOnly and a ReadWrite child, and the meter in front of it."""
    root = start_instance(tmp_path, "factory-root", children=[("line1-child", "ReadOnly"),
                                                               ("line1-writer", "ReadWrite")])
    meter = LinkMeter(root.host)
    try:
        yield root, meter
    finally:
        meter.stop()
        root.stop()


def start_child(tmp_path: Path, meter: LinkMeter, bandwidth: dict, name: str = "line1-child", mode: str = "ReadOnly",
                on_demand: bool = False):
    """A child behind the meter; without on-demand fills unless asked, so what crosses is the sync's alone."""
    return start_instance(tmp_path, name, parent=meter, mode=mode, repositories=["factory/*"],
                          parent_settings={"bandwidth": bandwidth}, extra={"onDemand": on_demand})


def bandwidth_of(instance) -> dict:
    return status_of(instance)["parent"]["bandwidth"]


def test_a_capped_sync_keeps_to_the_budget_over_any_10_seconds_measured_at_the_parent(tmp_path: Path, parent):
    root, meter = parent
    digest, layer = push_image(root, "factory/app", "1", 11 * MiB)  # some 11.5 s at 1 MB/s
    child = start_child(tmp_path, meter, {"maxBytesPerSecond": MB})
    try:
        wait_until(lambda: meter.moved("down", layer) > 2 * MB, timeout=30, what="the layer under way")
        during = bandwidth_of(child)
        wait_until(lambda: digest_at(child, "factory/app", "1") == digest, timeout=60, what="the image at the child")
        metrics = scrape(child)
    finally:
        child.stop()
    start, end = meter.span("down", layer)
    assert meter.moved("down", layer) == 11 * MiB and end - start > 10
    rates = [meter.moved("down", start=moment, end=moment + 10) / 10 for moment in _steps(start, end - 10, 0.1)]
    assert (1 - TOLERANCE) * MB <= min(rates) and max(rates) <= (1 + TOLERANCE) * MB, (min(rates), max(rates))
    assert during["maxBytesPerSecond"] == MB and during["effective"] == MB and during["windows"] == []
    assert 0.5 * MB <= during["currentBytesPerSecond"] <= (1 + TOLERANCE) * MB, during
    received = value(metrics, "connected_registry_parent_link_bytes_total", direction="received")
    assert 11 * MiB <= received <= 11 * MiB + SMALL_BODIES, "each byte counted once, as it arrived"
    assert value(metrics, "connected_registry_parent_link_limit_bytes_per_second") == MB
    print(f"capped at 1 MB/s: {min(rates):.0f} to {max(rates):.0f} bytes/s over any 10 s of {end - start:.1f} s")


def _steps(start: float, end: float, step: float) -> list[float]:
    return [start + step * number for number in range(int((end - start) / step) + 1)]


async def test_a_window_changes_the_rate_at_its_start_within_a_second(tmp_path: Path, parent, monkeypatch):
    """An in-process child with the instance's clock moved to two seconds before noon, while a blob crawls at the
    limit outside the window: at noon (real time, two seconds later) the window's limit is the link's."""
    root, meter = parent
    _, layer = push_image(root, "factory/app", "1", 8 * MiB)
    sync_name, sync_password, _ = sync_token_for("line1-child")
    monkeypatch.setenv("ACR_REGISTRY_CONNECTION_STRING", f"SyncTokenName={sync_name};SyncTokenPassword={sync_password}")
    noon_window = {"schedule": "0 12 * * *", "duration": "PT1H", "maxBytesPerSecond": 2 * MB}
    document = {"name": "line1-child", "mode": "ReadOnly", "repositories": ["factory/*"], "onDemand": False,
                "parent": {"endpoint": meter.url, "syncToken": {"name": sync_name},
                           "bandwidth": {"maxBytesPerSecond": MB // 4, "windows": [noon_window]}}}
    clock = FakeClock()
    set_clock(clock, NOON - timedelta(hours=1))
    child = await start_runtime(tmp_path / "line1-child", document, clock)
    try:
        await eventually(lambda: _true(meter.moved("down", layer) > 3 * MB // 4), what="the layer under way")
        set_clock(clock, NOON - timedelta(seconds=2))
        noon = time.monotonic() + 2.0
        assert _bandwidth(child)["effective"] == MB // 4
        await eventually(lambda: _true(time.monotonic() > noon + 3), timeout=10, what="three seconds into the window")
        assert _bandwidth(child)["effective"] == 2 * MB
    finally:
        await child.stop()
    before = meter.moved("down", layer, start=noon - 2, end=noon) / 2
    after = meter.moved("down", layer, start=noon + 1, end=noon + 3) / 2
    assert before <= (1 + TOLERANCE) * MB // 4, before  # the two seconds before noon: the limit outside the window
    assert after >= NEW_RATE_IN_FORCE * 2 * MB, after  # from a second after noon on: the window's
    print(f"before noon: {before:.0f} bytes/s; from a second after noon on: {after:.0f} bytes/s")


def test_a_twin_change_applies_to_the_transfer_in_flight(tmp_path: Path, parent):
    root, meter = parent
    _, layer = push_image(root, "factory/app", "1", 10 * MiB)
    child = start_child(tmp_path, meter, {"maxBytesPerSecond": MB // 2})
    try:
        wait_until(lambda: meter.moved("down", layer) > 2 * MB, timeout=30, what="the layer under way")
        written = time.monotonic()
        child.document["parent"]["bandwidth"]["maxBytesPerSecond"] = 2 * MB
        child.write_config()
        wait_until(lambda: bandwidth_of(child)["effective"] == 2 * MB, timeout=10, what="the new limit applied")
        applied = time.monotonic()
        wait_until(lambda: meter.moved("down", layer) == 10 * MiB, timeout=30, what="the whole layer")
        reported = json.loads((child.config_path.parent / "reported.json").read_text())
    finally:
        child.stop()
    before = meter.moved("down", layer, start=written - 2, end=written) / 2
    after = meter.moved("down", layer, start=applied + 0.5, end=applied + 2.5) / 2
    assert before <= (1 + TOLERANCE) * MB // 2, before
    assert after >= NEW_RATE_IN_FORCE * 2 * MB, after
    assert meter.requests("GET", f"/blobs/{layer}") == 1, "the transfer in flight was not the one that sped up"
    assert reported["parent"]["bandwidth"]["effective"] == 2 * MB
    print(f"before the change: {before:.0f} bytes/s; from half a second after it: {after:.0f} bytes/s")


def test_a_devices_pull_goes_before_a_background_sync(tmp_path: Path, parent):
    """While the sync copies a large image at the limit, a device pulls another image at the child (on demand):
    the pull gets most of the budget, and the link as a whole keeps to it."""
    root, meter = parent
    _, big = push_image(root, "factory/big", "1", 8 * MiB)
    child = start_child(tmp_path, meter, {"maxBytesPerSecond": MB}, on_demand=True)
    try:
        wait_until(lambda: meter.moved("down", big) > MB, timeout=30, what="the large image under way")
        _, small = push_image(root, "factory/small", "1", 2 * MiB)
        pulled = subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--src-creds", f"{READER[0]}:{READER[1]}",
                                 f"docker://{child.host}/factory/small:1", f"dir:{tmp_path / 'pulled'}"],
                                capture_output=True, text=True, timeout=60)
        assert pulled.returncode == 0, pulled.stderr
        assert meter.moved("down", big) < 8 * MiB, "the sync was over before the pull: nothing to go before"
    finally:
        child.stop()
    start, end = meter.span("down", small)
    pull_rate = meter.moved("down", small) / (end - start)
    sync_rate = meter.moved("down", big, start=start, end=end) / (end - start)
    assert pull_rate >= 0.7 * MB, f"the pull got {pull_rate:.0f} bytes/s, the sync {sync_rate:.0f}"
    assert pull_rate + sync_rate <= (1 + TOLERANCE) * MB + 100_000 / (end - start), (pull_rate, sync_rate)
    print(f"at 1 MB/s: the device's pull {pull_rate:.0f} bytes/s, the sync meanwhile {sync_rate:.0f}")


def test_uploads_keep_to_the_same_budget_and_the_feed_still_brings_news(tmp_path: Path, parent):
    """A ReadWrite child's outbox sends a layer up at the limit; meanwhile the parent's new image (its event from
    the feed's long poll, a small manifest and blobs) reaches the child within seconds."""
    root, meter = parent
    child = start_child(tmp_path, meter, {"maxBytesPerSecond": MB // 5}, name="line1-writer", mode="ReadWrite")
    try:
        wait_until(lambda: status_of(child)["activation"]["status"] == "Active", timeout=30, what="activation")
        _, layer = push_image(child, "factory/up", "1", MiB)  # some 5 s at 200 kB/s
        wait_until(lambda: meter.moved("up", "/blobs/uploads/") > 100_000, timeout=30, what="the upload under way")
        news = push_small_image(root, "factory/news", "1")
        asked = time.monotonic()
        wait_until(lambda: digest_at(child, "factory/news", "1") == news, timeout=10, what="the news at the child")
        arrived = time.monotonic()
        wait_until(lambda: digest_at(root, "factory/up", "1") is not None, timeout=30, what="the upload at the parent")
        sent = bandwidth_of(child)["bytesSent"]
    finally:
        child.stop()
    start, end = meter.span("up", "/blobs/uploads/")
    rate = meter.moved("up", "/blobs/uploads/") / (end - start)
    assert meter.moved("up", "/blobs/uploads/") >= MiB and sent >= MiB
    assert (1 - TOLERANCE) * MB // 5 <= rate <= (1 + TOLERANCE) * MB // 5, rate
    assert arrived < end, "the news came only once the upload was over"
    print(f"upload at {rate:.0f} bytes/s; the news arrived {arrived - asked:.1f} s after its push")


NOON = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def _bandwidth(runtime) -> dict:
    return runtime.status_document()["parent"]["bandwidth"]


async def _true(value: bool) -> bool:
    return value
