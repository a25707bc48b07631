"""What does not verify is refused before anything becomes visible, with a message that says what failed: a byte
changed in a blob, in a manifest, in the signed bundle manifest, a bundle signed by another instance; a bundle cut
short imports nothing and goes on from where it stopped when given whole; skopeo's layouts import with --unsigned
and skopeo reads ours (issue 17)."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.bundles.bundle_api import (bundle_site, cli, control_state, import_into, layer_of, manifests_in, push_image,
                                      state_in, state_of)
from tests.support.layouts import make_platform_index
from tests.support.oci import sha256
from tests.sync.hierarchy import OPERATOR, READER
from tests.sync.instance_api import digest_at, operator_cli, skopeo_push, status_of
from tests.support.processes import wait_until

LAYER = 1 << 20


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    base = tmp_path_factory.mktemp("verification")
    with bundle_site(base) as site:
        site.app = push_image(site.root, "factory/app", "1.0", layer_size=LAYER)
        wait_until(lambda: digest_at(site.online, "factory/app", "1.0") == site.app, what="the online child's sync")
        for name, instance in (("root", site.root), ("other", site.online)):
            for suffix in ("", ".tar"):
                cli("export", "--registry", instance.url, "--username", READER[0], "--password", READER[1],
                    "--repository", "factory/*", "--output", str(base / f"{name}{suffix}"))
        site.fresh = 0
        yield site


def _fresh(site) -> Path:
    site.fresh += 1
    return site.base / "fresh" / str(site.fresh)


def _copy(site, name: str) -> Path:
    target = site.base / f"copy-{site.fresh}-{name}"
    shutil.copytree(site.base / name, target)
    return target


def _flip_byte(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x01
    path.write_bytes(bytes(data))


def _refused(site, bundle: Path, *extra: str) -> tuple[str, Path]:
    data = _fresh(site)
    result = import_into(bundle, "--data", str(data), "--trust-key", str(site.root_key), *extra, expect=1)
    assert state_in(data) == {}, "something became visible"
    return result.stderr, data


def test_a_changed_byte_in_a_layer_is_refused_naming_the_blob(bundles):
    copy = _copy(bundles, "root")
    layer = "blobs/sha256/" + sha256(layer_of("factory/app", LAYER)).split(":")[1]
    _flip_byte(copy / layer, LAYER // 2)
    message, _ = _refused(bundles, copy)
    assert f"{layer} does not match its digest" in message, message


def test_a_changed_byte_in_a_manifest_is_refused_naming_the_manifest(bundles):
    copy = _copy(bundles, "root")
    manifest = "blobs/sha256/" + bundles.app.split(":")[1]
    _flip_byte(copy / manifest, 3)
    message, _ = _refused(bundles, copy)
    assert f"{manifest} does not match its digest" in message, message


def test_a_changed_signed_bundle_manifest_is_refused(bundles):
    copy = _copy(bundles, "root")
    signed = copy / "connected-registry-bundle.jws"
    header, payload, signature = signed.read_text().split(".")
    _flip_byte(signed, len(header) + 1 + len(payload) // 2)
    message, _ = _refused(bundles, copy)
    assert "does not verify with the trusted key" in message or "unreadable" in message, message


def test_a_bundle_signed_by_another_instance_is_refused(bundles):
    message, _ = _refused(bundles, bundles.base / "other.tar")
    assert "is signed by key sha256:" in message and "not by the trusted key" in message, message


def test_a_tampered_bundle_sent_to_a_running_child_is_refused_and_nothing_shows(bundles):
    tampered = bundles.base / "tampered.tar"
    data = bytearray((bundles.base / "root.tar").read_bytes())
    data[len(data) - 4096 - LAYER // 2] ^= 0x01  # inside the layer, the last blob of the tar
    tampered.write_bytes(bytes(data))
    offline = bundles.start_offline()
    result = import_into(tampered, "--registry", offline.url, "--username", OPERATOR[0], "--password", OPERATOR[1],
                         "--trust-key", str(bundles.root_key), expect=1)
    assert "does not match its digest" in result.stderr and "(400)" in result.stderr, result.stderr
    assert state_of(offline) == {}
    offline.stop()


def test_a_bundle_cut_short_imports_nothing_and_goes_on_when_given_whole(bundles):
    whole = bundles.base / "root.tar"
    cut = bundles.base / "cut.tar"
    with tarfile.open(whole) as archive:
        layer = next(m for m in archive.getmembers() if m.size == LAYER)
    cut.write_bytes(whole.read_bytes()[:layer.offset_data + LAYER // 2])
    message, data = _refused(bundles, cut)
    assert "the bundle ends inside blobs/sha256/" in message and "give the whole bundle again" in message \
        or "ends inside" in message, message
    imported = import_into(whole, "--data", str(data), "--trust-key", str(bundles.root_key))
    assert "imported 1 images" in imported.stdout
    assert state_in(data) == {"factory/app": {"1.0": bundles.app}}
    assert control_state(data).last_bundle_import["bytes"] <= LAYER // 2 + 4096  # the rest, not all again


def test_a_plain_layout_needs_unsigned_and_skopeo_layouts_import_with_it(bundles):
    layout, archive = bundles.base / "skopeo-layout", bundles.base / "skopeo.tar"
    source = f"docker://{bundles.root.process.host}/factory/app:1.0"
    for destination in (f"oci:{layout}:1.0", f"oci-archive:{archive}:1.0"):
        subprocess.run(["skopeo", "copy", "--preserve-digests", "--src-tls-verify=false", "--src-creds",
                        f"{READER[0]}:{READER[1]}", source, destination], check=True, capture_output=True, timeout=120)
    message, _ = _refused(bundles, layout)
    assert "--unsigned" in message, message
    for bundle in (layout, archive):
        data = _fresh(bundles)
        import_into(bundle, "--data", str(data), "--unsigned", "--repository", "factory/app")
        assert state_in(data) == {"factory/app": {"1.0": bundles.app}}


def test_skopeo_reads_our_bundles(bundles):
    for reference in (f"oci:{bundles.base / 'root'}:factory/app:1.0",
                      f"oci-archive:{bundles.base / 'root.tar'}:factory/app:1.0"):
        inspected = subprocess.run(["skopeo", "inspect", reference], check=True, capture_output=True, text=True,
                                   timeout=60)
        assert json.loads(inspected.stdout)["Digest"] == bundles.app


def test_a_terminal_gets_a_progress_bar_instead_of_a_line_per_image(bundles):
    controller, terminal = pty.openpty()
    command = [sys.executable, "-m", "connected_registry", "import", str(bundles.base / "root.tar"), "--data",
               str(_fresh(bundles)), "--trust-key", str(bundles.root_key)]
    finished = subprocess.run(command, stdout=terminal, stderr=subprocess.PIPE, timeout=120)
    os.close(terminal)
    shown = b""
    while select.select([controller], [], [], 0)[0]:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal's other end is closed: all was read
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert finished.returncode == 0, finished.stderr
    text = shown.decode()
    assert "\r[" in text and "MiB/1.0 MiB" in text and "1 images" in text, text
    assert "imported factory/app:1.0 sha256:" not in text  # the per-image lines are for logs, not a terminal


def test_export_platform_carries_only_those_images_and_the_index_whole(bundles):
    layout = bundles.base / "multi-layout"
    index, images = make_platform_index(layout, "multi", ["linux/amd64", "linux/arm64"], size="16K",
                                        attestations=False)
    skopeo_push(layout, "multi", bundles.root, "platforms/multi:1.0", "--all")
    bundle = bundles.base / "arm64.tar"
    cli("export", "--registry", bundles.root.url, "--username", READER[0], "--password", READER[1],
        "--repository", "platforms/*", "--platform", "linux/arm64", "--output", str(bundle))
    with tarfile.open(bundle) as archive:
        carried = set(archive.getnames())
    assert f"blobs/sha256/{images['linux/amd64'].split(':')[1]}" not in carried
    assert f"blobs/sha256/{images['linux/arm64'].split(':')[1]}" in carried
    data = _fresh(bundles)
    import_into(bundle, "--data", str(data), "--trust-key", str(bundles.root_key))
    assert state_in(data) == {"platforms/multi": {"1.0": index}}  # the index byte for byte, its digest kept
    assert manifests_in(data, "platforms/multi") == {index, images["linux/arm64"]}


def test_the_last_import_and_export_show_in_the_status_and_an_older_bundle_changes_nothing(bundles):
    """Last in this module: it pushes a second tag at the root."""
    offline = bundles.start_offline()
    operator = ("--registry", offline.url, "--username", OPERATOR[0], "--password", OPERATOR[1])
    import_into(bundles.base / "root.tar", *operator, "--trust-key", str(bundles.root_key))
    newer = push_image(bundles.root, "factory/app", "1.1")
    cli("export", "--registry", bundles.root.url, "--username", READER[0], "--password", READER[1],
        "--repository", "factory/*", "--output", str(bundles.base / "newer.tar"))
    import_into(bundles.base / "newer.tar", *operator, "--trust-key", str(bundles.root_key))
    latest = status_of(offline)["bundles"]["lastImport"]
    assert latest["from"] == "bundle-root" and latest["images"] == 2 and not latest["replay"], latest
    assert status_of(bundles.root)["bundles"]["lastExport"]["images"] == 2

    replayed = import_into(bundles.base / "root.tar", *operator, "--trust-key", str(bundles.root_key))
    assert "older than one imported before" in replayed.stdout and "nothing was changed" in replayed.stdout
    assert state_of(offline) == {"factory/app": {"1.0": bundles.app, "1.1": newer}}  # 1.1 is not in the old one
    assert status_of(offline)["bundles"]["lastImport"]["replay"] is True
    assert "bundle in    from bundle-root" in operator_cli(offline, "status").stdout
    reported = offline.config_path.parent / "reported.json"  # the reported properties, as the twin gets them
    wait_until(lambda: reported.exists() and (json.loads(reported.read_text()).get("bundles") or {})
               .get("lastImport", {}).get("replay") is True, what="the replay in the reported properties")
    offline.stop()
