"""A full data volume (SPEC 12): the data directory on a small tmpfs of its own. Pushes and syncs that need
the space fail with DISK_STORAGE_FULL (in the answer and as a status detail), pulls of what is there go on,
and when the volume grows the instance recovers by itself: the detail clears, pushes work, the sync
finishes. The tests run as root (as CI does); the mounts are removed in the fixture's finalizer."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.faults.conftest import figures
from tests.support.http import basic, request
from tests.support.oci import image_manifest, sha256
from tests.support.processes import RegistryProcess, wait_until
from tests.sync.hierarchy import OPERATOR, READER, WRITER, start_instance

MiB = 1 << 20


class SmallVolumes:
    """tmpfs mounts of a chosen size that can grow; every one is unmounted at the end."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.mounted: list[Path] = []

    def mount(self, name: str, size_mib: int) -> Path:
        path = self.base / name
        path.mkdir(parents=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "tmpfs", str(path)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"cannot mount a small tmpfs as the data volume ({result.stderr.strip()}): these tests "
                        "need root, as CI has")
        self.mounted.append(path)
        return path

    def grow(self, path: Path, size_mib: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size_mib}m", str(path)], check=True)

    def unmount_all(self) -> None:
        for path in reversed(self.mounted):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.fixture
def volumes(tmp_path: Path):
    volumes = SmallVolumes(tmp_path / "volumes")
    try:
        yield volumes
    finally:
        volumes.unmount_all()


def _push_blob(url: str, repository: str, data: bytes, headers: dict | None = None):
    return request(f"{url}/v2/{repository}/blobs/uploads/?digest={sha256(data)}", "POST", data,
                   {"Content-Type": "application/octet-stream", **(headers or {})}, timeout=60)


def _push_image(url: str, repository: str, tag: str, layer: bytes, headers: dict | None = None) -> bytes:
    config = json.dumps({"tag": tag}).encode()
    for blob in (config, layer):
        reply = _push_blob(url, repository, blob, headers)
        assert reply.status == 201, (reply.status, reply.body[:300])
    manifest = image_manifest(config, [layer])
    reply = request(f"{url}/v2/{repository}/manifests/{tag}", "PUT", manifest,
                    {"Content-Type": "application/vnd.oci.image.manifest.v1+json", **(headers or {})})
    assert reply.status == 201, (reply.status, reply.body[:300])
    return manifest


def _fill_to_the_last_byte(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, bytes(512))
    except OSError as error:
        assert error.errno == 28, error  # ENOSPC
    finally:
        os.close(fd)


def _status_codes(url: str, headers: dict | None = None) -> set[str]:
    reply = request(f"{url}/acr/connected/v1/status", headers=headers or {})
    assert reply.status == 200, reply.body[:300]
    return {detail["code"] for detail in reply.json()["statusDetails"]}


def _pull_intact(url: str, repository: str, tag: str, manifest: bytes, layer: bytes, headers: dict | None = None):
    reply = request(f"{url}/v2/{repository}/manifests/{tag}", headers=headers or {})
    assert reply.status == 200 and reply.body == manifest, (reply.status, reply.body[:200])
    reply = request(f"{url}/v2/{repository}/blobs/{sha256(layer)}", headers=headers or {}, timeout=60)
    assert reply.status == 200 and reply.body == layer, reply.status


def test_pushes_on_a_full_volume_fail_with_disk_storage_full_reads_go_on_and_it_recovers(volumes: SmallVolumes):
    volume = volumes.mount("root", 24)
    registry = RegistryProcess(volume / "data")
    try:
        layer = os.urandom(2 * MiB)
        manifest = _push_image(registry.url, "full/app", "v1", layer)
        # Fill the volume with blobs until one is refused.
        refused = None
        for number in range(40):
            blob = os.urandom(3 * MiB)
            reply = _push_blob(registry.url, f"full/filler{number % 3}", blob)
            if reply.status != 201:
                refused = (reply, blob)
                break
        assert refused is not None, "the volume never filled"
        reply, blob = refused
        assert reply.status == 507, (reply.status, reply.body[:300])
        assert reply.error_code == "DISK_STORAGE_FULL", reply.body[:300]
        assert "full" in reply.error_message and "free space" in reply.error_message, reply.error_message
        figures["full disk: pushes refused with DISK_STORAGE_FULL"] += 1
        # A chunked upload and a manifest push need space too, and fail the same way.
        big = os.urandom(12 * MiB)
        session = request(f"{registry.url}/v2/full/chunked/blobs/uploads/", "POST")
        assert session.status == 202
        location = session.headers["Location"]
        patch = request(location, "PATCH", big, {"Content-Type": "application/octet-stream"}, timeout=60)
        assert patch.status == 507 and patch.error_code == "DISK_STORAGE_FULL", (patch.status, patch.body[:300])
        figures["full disk: pushes refused with DISK_STORAGE_FULL"] += 1
        assert "DISK_STORAGE_FULL" in _status_codes(registry.url)
        state = request(f"{registry.url}/acr/connected/v1/status").json()["connectionState"]
        assert state == "Unhealthy", state
        # Reads of what is there go on, and nothing stored was damaged.
        _pull_intact(registry.url, "full/app", "v1", manifest, layer)
        assert request(f"{registry.url}/v2/full/app/tags/list").json()["tags"] == ["v1"]
        assert request(f"{registry.url}/readyz").status == 200
        figures["full disk: pulls served while full"] += 2
        # Down to the last byte, and restarted so: it starts, and serves what it has.
        _fill_to_the_last_byte(volume / "filler")
        registry.restart()
        _pull_intact(registry.url, "full/app", "v1", manifest, layer)
        assert _push_blob(registry.url, "full/again", blob).error_code == "DISK_STORAGE_FULL"
        figures["full disk: restarts on a completely full volume"] += 1

        volumes.grow(volume, 96)
        wait_until(lambda: "DISK_STORAGE_FULL" not in _status_codes(registry.url), timeout=30,
                   what="DISK_STORAGE_FULL to clear by itself once the volume grew")
        assert _push_blob(registry.url, "full/again", blob).status == 201
        manifest2 = _push_image(registry.url, "full/app", "v2", os.urandom(MiB))
        assert request(f"{registry.url}/v2/full/app/manifests/v2").body == manifest2
        _pull_intact(registry.url, "full/app", "v1", manifest, layer)
        figures["full disk: recoveries without a restart"] += 1
    finally:
        registry.stop()


def test_a_sync_onto_a_full_volume_fails_with_disk_storage_full_and_finishes_when_space_returns(
        tmp_path: Path, volumes: SmallVolumes):
    root = start_instance(tmp_path, "factory-root", children=[("line1-child", "ReadOnly")])
    volume = volumes.mount("child", 20)
    child = start_instance(volume, "line1-child", parent=root)
    reader, writer = basic(*READER), basic(*WRITER)
    try:
        small_layer = os.urandom(MiB)
        small = _push_image(root.url, "factory/app", "v1", small_layer, writer)
        wait_until(lambda: request(f"{child.url}/v2/factory/app/manifests/v1", headers=reader).status == 200,
                   timeout=60, what="the first image at the child")
        big_layer = os.urandom(24 * MiB)
        big = _push_image(root.url, "factory/app", "v2", big_layer, writer)
        wait_until(lambda: "DISK_STORAGE_FULL" in _status_codes(child.url, reader), timeout=60,
                   what="DISK_STORAGE_FULL at the child")
        figures["full disk: syncs refused with DISK_STORAGE_FULL"] += 1
        # A pull of the missing image asks the parent on demand (SPEC 8), and storing it is a write that needs
        # space too: a clear DISK_STORAGE_FULL, never a 500 and never a half-written image.
        miss = request(f"{child.url}/v2/factory/app/manifests/v2", headers=reader)
        assert miss.status == 507 and miss.error_code == "DISK_STORAGE_FULL", (miss.status, miss.body[:300])
        figures["full disk: on-demand fills refused with DISK_STORAGE_FULL"] += 1
        _pull_intact(child.url, "factory/app", "v1", small, small_layer, reader)
        figures["full disk: pulls served while full"] += 1

        volumes.grow(volume, 128)
        wait_until(lambda: request(f"{child.url}/v2/factory/app/manifests/v2", headers=reader).status == 200,
                   timeout=90, what="the big image at the child once the volume grew")
        wait_until(lambda: "DISK_STORAGE_FULL" not in _status_codes(child.url, reader), timeout=30,
                   what="DISK_STORAGE_FULL to clear")
        _pull_intact(child.url, "factory/app", "v2", big, big_layer, reader)
        figures["full disk: recoveries without a restart"] += 1
    finally:
        child.stop()
        root.stop()


def test_a_full_parent_keeps_the_childs_upload_pending_until_it_has_room(tmp_path: Path, volumes: SmallVolumes):
    """SPEC 7.3: an acknowledged local push is never lost, not by a full disk elsewhere. The parent's 507 is
    not a refusal: the outbox entry stays pending (never parked) and goes up once the parent has room."""
    volume = volumes.mount("root", 20)
    root = start_instance(volume, "factory-root", children=[("line1-child", "ReadWrite")])
    child = start_instance(tmp_path, "line1-child", parent=root, mode="ReadWrite", repositories=["factory/*"])
    writer, reader = basic(*WRITER), basic(*READER)
    operator = basic(*OPERATOR)
    try:
        layer = os.urandom(24 * MiB)
        manifest = _push_image(child.url, "factory/up", "v1", layer, writer)
        wait_until(lambda: "DISK_STORAGE_FULL" in _status_codes(root.url, reader), timeout=60,
                   what="the parent to run out of room")
        entries = request(f"{child.url}/acr/connected/v1/outbox", headers=operator).json()["entries"]
        assert entries and all(entry["state"] == "pending" for entry in entries), entries
        assert "UPLOAD_REJECTED" not in _status_codes(child.url, reader)
        figures["full disk: uploads held pending at a full parent"] += 1

        volumes.grow(volume, 128)
        wait_until(lambda: request(f"{root.url}/v2/factory/up/manifests/v1", headers=reader).body == manifest,
                   timeout=120, what="the child's image at the parent once it has room")
        _pull_intact(root.url, "factory/up", "v1", manifest, layer, reader)
        wait_until(lambda: not request(f"{child.url}/acr/connected/v1/outbox", headers=operator).json()["entries"],
                   timeout=30, what="the outbox to drain")
        figures["full disk: recoveries without a restart"] += 1
    finally:
        child.stop()
        root.stop()
