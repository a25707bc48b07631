"""Hostile index shapes at the boundary between two layers (issue 14, finding 2): indexes that name the same
content over and over, nested (10 x 10 x 10), wide (one entry repeated up to the 4 MiB cap), as a lattice (every
index naming every index of the level below) or as a chain deeper than the walk's budget. Pushed at the root
they come down to a ReadWrite child, pushed at the child they go up, each costing the parent about one request
per distinct manifest and blob (a chain too deep is refused as content: parked going up, DOWNLOAD_FAILED coming
down); and a small push behind all of them still reaches the other layer within seconds."""

from __future__ import annotations

import json
import time
from pathlib import Path

from connected_registry.oci.manifest import MAX_MANIFEST_BYTES
from connected_registry.sync.budget import MAX_DEPTH
from tests.faults.conftest import figures
from tests.support.clients import RecordingProxy
from tests.support.oci import OCI_INDEX, OCI_MANIFEST, descriptor, index_of, sha256
from tests.support.processes import wait_until
from tests.sync.hierarchy import start_instance
from tests.sync.instance_api import PROMPTLY, digest_at, push_small_image, push_the_one_image, put_manifest, status_of

BLOBS = 2  # every shape's one image manifest: a config and a layer


def _push_levels(instance, repository: str, levels: list[list[bytes]]) -> str:
    """Every manifest of every level, the lowest first (by digest), the last one tagged v1; its digest."""
    bodies = [body for level in levels for body in level]
    for body in bodies[:-1]:
        put_manifest(instance, repository, sha256(body), body)
    return put_manifest(instance, repository, "v1", bodies[-1])


def nested(instance, repository: str) -> tuple[str, int]:
    """10 x 10 x 10 references to one image: (the tagged digest, distinct manifests)."""
    levels = [[push_the_one_image(instance, repository)]]
    for _ in range(3):
        levels.append([index_of(levels[-1][0], 10)])
    return _push_levels(instance, repository, levels[1:]), 4


def wide(instance, repository: str) -> tuple[str, int]:
    """One image named as often as an index at the 4 MiB cap can name it."""
    image = push_the_one_image(instance, repository)
    entry = len(json.dumps(descriptor(OCI_MANIFEST, image))) + len(", ")
    body = index_of(image, (MAX_MANIFEST_BYTES - 100) // entry)
    assert len(body) <= MAX_MANIFEST_BYTES
    return _push_levels(instance, repository, [[body]]), 2


def lattice(instance, repository: str, width: int = 6, depth: int = 4) -> tuple[str, int]:
    """`depth` levels of `width` distinct indexes, each naming every index of the level below: width ** depth
    paths to the image through width * depth + 2 manifests."""
    levels = [[push_the_one_image(instance, repository)]]
    for level in range(depth):
        below = [descriptor(json.loads(body)["mediaType"], body) for body in levels[-1]]
        levels.append([json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": below,
                                   "annotations": {"level": str(level), "index": str(n)}}).encode()
                       for n in range(width)])
    levels.append([json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                               "manifests": [descriptor(OCI_INDEX, body) for body in levels[-1]]}).encode()])
    return _push_levels(instance, repository, levels[1:]), width * depth + 2


def chain(instance, repository: str, length: int) -> str:
    """An index of an index of ... of an image, `length` indexes deep; the top's digest."""
    levels = [[push_the_one_image(instance, repository)]]
    for _ in range(length):
        levels.append([index_of(levels[-1][0], 1)])
    return _push_levels(instance, repository, levels[1:])


SHAPES = {"nested": nested, "wide": wide, "lattice": lattice}
TOO_DEEP = 600  # past MAX_DEPTH, and past the interpreter's stack for a walk by recursion


def test_hostile_index_shapes_cost_one_request_per_distinct_manifest_in_both_directions(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("plant-middle", "ReadWrite")])
    proxy = middle = None
    try:
        # coming down: pushed at the root before the child's first (full) sync
        down = {shape: make(root, f"factory/down-{shape}") for shape, make in SHAPES.items()}
        chain(root, "factory/down-deep", TOO_DEEP)
        marker = push_small_image(root, "factory/down-marker", "v1")
        proxy = RecordingProxy(root.host, timeout=30)  # counts what the parent is asked
        # onDemand off: what is at the child came by sync, not by a pull-through on the test's GET
        middle = start_instance(tmp_path, "plant-middle", parent=proxy, mode="ReadWrite", repositories=["factory/*"],
                                extra={"onDemand": False})
        wait_until(lambda: digest_at(middle, "factory/down-marker", "v1") == marker, timeout=60,
                   what="the first sync to bring the marker")
        for shape, (top, distinct) in down.items():
            figures["attack: nested or repeated index entries (down) tried"] += 1
            wait_until(lambda: digest_at(middle, f"factory/down-{shape}", "v1") == top, timeout=30,
                       what=f"the {shape} index at the child")
            gets = proxy.requests_for(f"factory/down-{shape}", "GET")
            assert len(gets) <= 3 * distinct + BLOBS + 10, f"{shape}: {len(gets)} GETs for {distinct} manifests"
            figures["attack: nested or repeated index entries (down) held"] += 1
        figures["attack: index chain past the depth budget (down) tried"] += 1
        failed = wait_until(lambda: next((d["description"] for d in status_of(middle)["statusDetails"]
                                          if d["code"] == "DOWNLOAD_FAILED"), None), timeout=30, what="DOWNLOAD_FAILED")
        assert "factory/down-deep" in failed and f"over the budget of {MAX_DEPTH} levels" in failed, failed
        assert digest_at(middle, "factory/down-deep", "v1") is None
        later = push_small_image(root, "factory/down-marker", "v2")  # the feed goes on
        wait_until(lambda: digest_at(middle, "factory/down-marker", "v2") == later, timeout=PROMPTLY * 2,
                   what="a push at the root after the deep chain")
        figures["attack: index chain past the depth budget (down) held"] += 1

        # going up: pushed at the child, each manifest an outbox entry of its own, and a small push behind them
        up = {shape: make(middle, f"factory/up-{shape}") for shape, make in SHAPES.items()}
        chain(middle, "factory/up-deep", TOO_DEEP)
        pushed = time.monotonic()
        marker = push_small_image(middle, "factory/up-marker", "v1")
        wait_until(lambda: digest_at(root, "factory/up-marker", "v1") == marker, timeout=60, what="the push behind")
        took = time.monotonic() - pushed
        for shape, (top, distinct) in up.items():
            figures["attack: nested or repeated index entries (up) tried"] += 1
            wait_until(lambda: digest_at(root, f"factory/up-{shape}", "v1") == top, timeout=30,
                       what=f"the {shape} index at the parent")
            sent = proxy.requests_for(f"factory/up-{shape}")
            entries = distinct  # each manifest was pushed on its own: one entry each, sending its tree
            assert len(sent) <= entries * (distinct + BLOBS + 3) + 20, f"{shape}: {len(sent)} requests at the parent"
            figures["attack: nested or repeated index entries (up) held"] += 1
        figures["attack: index chain past the depth budget (up) tried"] += 1
        parked = wait_until(lambda: next((d["description"] for d in status_of(middle)["statusDetails"]
                                          if d["code"] == "UPLOAD_BUDGET_EXCEEDED"), None), timeout=30,
                            what="UPLOAD_BUDGET_EXCEEDED")
        assert "factory/up-deep" in parked and f"over the budget of {MAX_DEPTH} levels" in parked, parked
        assert digest_at(root, "factory/up-deep", "v1") is None
        assert took < PROMPTLY, f"a small push took {took:.1f}s to reach the parent behind the hostile ones"
        figures["attack: index chain past the depth budget (up) held"] += 1
    finally:
        if middle is not None:
            middle.stop()
        if proxy is not None:
            proxy.stop()
        root.stop()
