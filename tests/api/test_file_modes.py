"""Nothing in the data volume is readable by other users of the machine (issue 14, finding 12): after a push, a pull
and a sync every file is 0600 and every directory 0700, reported.json beside the configuration too, and a volume an
older version left readable is made private at the next start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.support.http import basic, request
from tests.support.layouts import make_image
from tests.support.oci import sha256
from tests.support.processes import RegistryProcess, wait_until
from tests.sync.hierarchy import READER, WRITER, start_instance
from tests.sync.instance_api import digest_at, manifest_at, skopeo_push


def modes(data_dir: Path) -> dict[str, int]:
    """The permission bits of everything under `data_dir` (itself included), by path relative to it."""
    found = {".": stat.S_IMODE(os.stat(data_dir).st_mode)}
    for directory, subdirectories, files in os.walk(data_dir):
        for name in subdirectories + files:
            path = Path(directory, name)
            found[str(path.relative_to(data_dir))] = stat.S_IMODE(os.stat(path, follow_symlinks=False).st_mode)
    return found


def assert_private(data_dir: Path, expected: list[str]) -> None:
    found = modes(data_dir)
    for path in expected:  # what the walk must have seen, so that it checked something
        assert path in found or any(name.startswith(path) for name in found), f"{path} not in {data_dir}"
    wrong = {path: oct(mode) for path, mode in found.items()
             if mode != (0o700 if os.path.isdir(data_dir / path) else 0o600)}
    assert not wrong, f"readable by others in {data_dir}: {wrong}"


def test_after_a_push_a_pull_and_a_sync_every_file_is_0600_and_every_directory_0700(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("line1-child", "ReadWrite")])
    child = start_instance(tmp_path, "line1-child", parent=root, mode="ReadWrite", repositories=["factory/*"])
    try:
        layout = tmp_path / "layout"
        down, up = make_image(layout, "down"), make_image(layout, "up")
        skopeo_push(layout, "down", root, "factory/down:v1")
        skopeo_push(layout, "up", child, "factory/up:v1")
        wait_until(lambda: digest_at(child, "factory/down", "v1") == down, timeout=60, what="the sync down")
        wait_until(lambda: digest_at(root, "factory/up", "v1") == up, timeout=60, what="the outbox up")
        layer = manifest_at(child, "factory/down", "v1").json()["layers"][0]
        assert request(f"{child.url}/v2/factory/down/blobs/{layer['digest']}", headers=basic(*READER)).status == 200
        for instance in (root, child):  # an upload session left open, with some bytes
            started = request(f"{instance.url}/v2/factory/open/blobs/uploads/", "POST", b"", basic(*WRITER))
            assert started.status == 202
            assert request(started.headers["Location"], "PATCH", b"some bytes", basic(*WRITER)).status == 202
        for instance in (root, child):
            assert_private(instance.process.data_dir, ["metadata.db", "metadata.db-wal", "metadata.db-shm",
                                                       "auth/token-signing-key.pem", "uploads/", "blobs/sha256/",
                                                       f"blobs/sha256/{layer['digest'][7:9]}/{layer['digest'][7:]}"])
            reported = instance.config_path.parent / "reported.json"  # beside the configuration, not in the volume
            wait_until(reported.exists, what="reported.json")
            assert stat.S_IMODE(reported.stat().st_mode) == 0o600
    finally:
        child.stop()
        root.stop()


def test_a_volume_an_older_version_left_readable_is_made_private_at_start(tmp_path: Path):
    registry = RegistryProcess(tmp_path / "data")
    blob = b"a blob kept from before"
    assert request(f"{registry.url}/v2/factory/app/blobs/uploads/?digest={sha256(blob)}", "POST", blob).status == 201
    assert request(f"{registry.url}/v2/factory/app/blobs/uploads/", "POST", b"").status == 202
    registry.stop()
    for path in [registry.data_dir, *registry.data_dir.rglob("*")]:  # as versions before issue 14 left them
        path.chmod(0o755 if path.is_dir() else 0o644)

    registry.restart()
    try:
        assert request(f"{registry.url}/v2/factory/app/blobs/{sha256(blob)}").body == blob
        assert_private(registry.data_dir, ["metadata.db", "uploads/", f"blobs/sha256/{sha256(blob)[7:9]}/"])
    finally:
        registry.stop()
