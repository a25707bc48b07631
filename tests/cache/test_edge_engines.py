"""Done-when 6: the way IoT Edge devices pull, through two cold layers: moby through the Engine API call
edgeAgent makes (POST /images/create with X-Registry-Auth), and containerd's `ctr images pull --user`;
both images complete in their stores (SPEC 8)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.cache.layers import cache_status, start_cold_child
from tests.support.clients import engine_request, registry_auth
from tests.support.layouts import make_image, read_blob
from tests.sync.hierarchy import READER, start_instance
from tests.sync.instance_api import skopeo_push


@pytest.fixture
def cold_hierarchy(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("plant-middle", "ReadOnly")])
    middle = start_cold_child(tmp_path, "plant-middle", root, children=[("line1-leaf", "ReadOnly")])
    leaf = start_cold_child(tmp_path, "line1-leaf", middle)
    try:
        yield root, middle, leaf
    finally:
        for instance in (leaf, middle, root):
            instance.stop()


def test_moby_and_containerd_pull_module_images_through_the_cold_leaf(cold_hierarchy, dockerd, containerd,
                                                                      tmp_path: Path):
    root, middle, leaf = cold_hierarchy
    layout = tmp_path / "layout"
    for_docker = make_image(layout, "agent", layers=2, size="512K")
    for_ctr = make_image(layout, "sensor", layers=2, size="512K")
    skopeo_push(layout, "agent", root, "factory/edge-agent:1.5")
    skopeo_push(layout, "sensor", root, "factory/sensor:2.0")

    path = f"/v1.41/images/create?fromImage={leaf.host}/factory/edge-agent&tag=1.5"
    status, body = engine_request(dockerd.socket, "POST", path, {"X-Registry-Auth": registry_auth(*READER, leaf.host)})
    messages = [json.loads(line) for line in body.splitlines() if line.strip()]
    assert status == 200 and not [m for m in messages if "error" in m], messages
    assert messages[-1]["status"].startswith(f"Status: Downloaded newer image for {leaf.host}/factory/edge-agent:1.5")
    assert f"{leaf.host}/factory/edge-agent@{for_docker}" in dockerd.repo_digests(f"{leaf.host}/factory/edge-agent:1.5")
    image_id = dockerd.docker("image", "inspect", "--format", "{{.Id}}", f"{leaf.host}/factory/edge-agent:1.5").stdout
    assert image_id.strip() == json.loads(read_blob(layout, for_docker))["config"]["digest"]

    reference = f"{leaf.host}/factory/sensor:2.0"
    containerd.ctr("images", "pull", "--plain-http", "--user", ":".join(READER), reference)
    assert containerd.image_digest(reference) == for_ctr
    check = containerd.ctr("images", "check", f"name=={reference}").stdout
    assert re.search(r"complete \(3/3\)", check), check  # every blob there
    manifest = json.loads(read_blob(layout, for_ctr))
    for blob in [manifest["config"], *manifest["layers"]]:
        assert containerd.content(blob["digest"]) == read_blob(layout, blob["digest"])

    for instance in (leaf, middle):
        status = cache_status(instance)
        assert status["lastSyncTime"] is None and status["bytesFetchedOnDemand"] > 2 * 512 * 1024, status
