"""Done-when of issue 16, platforms, with real processes and real clients: with `platforms: ["linux/arm64"]` a
three-platform index syncs with its digest unchanged, only the arm64 blobs cross the link (counted at the parent's
side of it), moby (through the Engine API call edgeAgent makes) and skopeo pull it for arm64 by tag and by digest,
and an amd64 pull gets the 404 naming `platforms`, or is filled on demand once `onDemand` allows."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support.clients import RecordingProxy, engine_request, registry_auth
from tests.support.layouts import make_platform_index, read_blob
from tests.support.processes import wait_until
from tests.sync.hierarchy import BOTH_TOP_TIERS, READER, start_instance
from tests.sync.instance_api import digest_at, skopeo_push

pytestmark = BOTH_TOP_TIERS  # the parent's side on the embedded stores and as a scale-out replica

PLATFORMS = ["linux/amd64", "linux/arm64", "linux/arm/v7"]


def engine_pull(dockerd, host: str, reference: str, platform: str) -> list[dict]:
    """POST /images/create as edgeAgent makes it, for one platform: the engine's progress messages."""
    name, _, tag = reference.rpartition("@") if "@" in reference else reference.rpartition(":")
    path = f"/v1.41/images/create?fromImage={host}/{name}&tag={tag}&platform={platform}"
    status, body = engine_request(dockerd.socket, "POST", path, {"X-Registry-Auth": registry_auth(*READER, host)})
    messages = [json.loads(line) for line in body.splitlines() if line.strip()]
    assert status == 200 or messages, (status, body)
    return messages if status == 200 else [{"error": body.decode()}]


def errors(messages: list[dict]) -> list[str]:
    return [message["error"] for message in messages if "error" in message]


def skopeo_copy(host: str, reference: str, architecture: str, destination: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--src-creds", ":".join(READER),
                           "--override-os", "linux", "--override-arch", architecture,
                           f"docker://{host}/{reference}", f"oci:{destination}:pulled"],
                          capture_output=True, text=True, timeout=180)


def image_blobs(layout: Path, digest: str) -> set[str]:
    manifest = json.loads(read_blob(layout, digest))
    return {digest, *(blob["digest"] for blob in [manifest["config"], *manifest["layers"]])}


def test_an_arm64_site_serves_moby_and_skopeo_the_arm64_image_and_only_its_blobs_crossed(tmp_path: Path, dockerd):
    layout = tmp_path / "layout"
    index, images = make_platform_index(layout, "app", PLATFORMS, layers=2, size="256K")
    root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")])
    proxy = RecordingProxy(root.host, timeout=30)
    leaf = None
    try:
        skopeo_push(layout, "app", root, "factory/app:1.0", "--all")
        leaf = start_instance(tmp_path, "line1-leaf", parent=proxy, repositories=["factory/*"],
                              extra={"platforms": ["linux/arm64"], "onDemand": False})
        wait_until(lambda: digest_at(leaf, "factory/app", "1.0") == index, timeout=60, what="the index at the leaf")

        crossed = {exchange.path.rsplit("/", 1)[1] for exchange in proxy.requests_for("factory/app", "GET", "blobs/")
                   if exchange.status == 200}
        arm64_blobs = image_blobs(layout, images["linux/arm64"]) - {images["linux/arm64"]}
        assert arm64_blobs <= crossed, "the arm64 image's blobs came down"
        for platform in ("linux/amd64", "linux/arm/v7"):
            assert not crossed & image_blobs(layout, images[platform]), f"{platform} blobs crossed the link"

        # moby: by tag, then (removed in between) by the index's digest; the arm64 image both times
        for reference in ("factory/app:1.0", f"factory/app@{index}"):
            assert errors(engine_pull(dockerd, leaf.host, reference, "linux/arm64")) == []
            inspected = json.loads(dockerd.docker("image", "inspect", f"{leaf.host}/{reference}").stdout)[0]
            assert inspected["Architecture"] == "arm64"
            assert f"{leaf.host}/factory/app@{index}" in inspected["RepoDigests"]
            dockerd.docker("image", "rm", f"{leaf.host}/{reference}")

        # skopeo, by tag and by digest: the arm64 manifest, whole
        for number, reference in enumerate(("factory/app:1.0", f"factory/app@{index}")):
            copied = skopeo_copy(leaf.host, reference, "arm64", tmp_path / f"skopeo-{number}")
            assert copied.returncode == 0, copied.stderr
            pulled = json.loads((tmp_path / f"skopeo-{number}" / "index.json").read_text())["manifests"][0]
            assert pulled["digest"] == images["linux/arm64"]

        # amd64 with onDemand off: a 404 that names the setting, for both clients
        refused = errors(engine_pull(dockerd, leaf.host, "factory/app:1.0", "linux/amd64"))
        assert refused and "`platforms`" in refused[0], refused
        copied = skopeo_copy(leaf.host, "factory/app:1.0", "amd64", tmp_path / "skopeo-amd64")
        assert copied.returncode != 0 and "`platforms`" in copied.stderr, copied.stderr

        # onDemand on (a twin change, no restart): the amd64 image fills from the parent
        leaf.write_config({**leaf.document, "onDemand": True})
        wait_until(lambda: not errors(engine_pull(dockerd, leaf.host, "factory/app:1.0", "linux/amd64")), timeout=30,
                   what="the amd64 pull once onDemand allows it")
        inspected = json.loads(dockerd.docker("image", "inspect", f"{leaf.host}/factory/app:1.0").stdout)[0]
        assert inspected["Architecture"] == "amd64"
    finally:
        if leaf is not None:
            leaf.stop()
        proxy.stop()
        root.stop()
