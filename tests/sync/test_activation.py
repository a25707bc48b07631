"""Activation (SPEC 6): one active instance per name, deactivation, mode rules; and the operator commands."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.layouts import make_image
from tests.support.processes import free_port, run_cli, wait_until
from tests.sync.hierarchy import BOTH_TOP_TIERS, OPERATOR, start_instance, sync_token_for
from tests.sync.instance_api import codes, manifest_at, skopeo_push, status_of

pytestmark = BOTH_TOP_TIERS  # the parent's side on the embedded stores and as a scale-out replica


def cli(*arguments: str) -> subprocess.CompletedProcess:
    return run_cli(*arguments)


def test_a_second_deployment_waits_until_the_name_is_deactivated(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")])
    first = start_instance(tmp_path, "line1-leaf", parent=root, repositories=["factory/*"])
    second = None
    try:
        wait_until(lambda: status_of(first)["activation"]["status"] == "Active", what="the first deployment Active")
        second = start_instance(tmp_path, "line1-leaf", parent=root, repositories=["factory/*"],
                                directory_name="line1-leaf-second")
        refused = wait_until(lambda: (lambda s: s if "ALREADY_ACTIVE" in codes(s) else None)(status_of(second)),
                             what="ALREADY_ACTIVE on the second deployment")
        assert refused["activation"]["status"] == "Inactive" and refused["connectionState"] == "Unhealthy"

        sync_name, sync_password, _ = sync_token_for("line1-leaf")
        result = cli("deactivate", "line1-leaf", "--registry", root.url, "--username", sync_name,
                     "--password", sync_password)
        assert result.returncode == 0, result.stderr
        assert "Inactive" in result.stdout

        stopped = wait_until(lambda: (lambda s: s if "DEACTIVATED" in codes(s) else None)(status_of(first)),
                             what="the old instance told it was deactivated")
        assert stopped["activation"]["status"] == "Inactive"

        result = cli("sync-now", "--registry", second.url, "--username", OPERATOR[0], "--password", OPERATOR[1])
        assert result.returncode == 0, result.stderr
        wait_until(lambda: status_of(second)["activation"]["status"] == "Active", what="the second deployment Active")

        layout = tmp_path / "layout"
        make_image(layout, "v1")
        skopeo_push(layout, "v1", root, "factory/app:v1")
        wait_until(lambda: manifest_at(second, "factory/app", "v1"), timeout=30, what="content at the new deployment")
        assert manifest_at(first, "factory/app", "v1") is None  # the deactivated one no longer syncs
    finally:
        for instance in (second, first, root):
            if instance is not None:
                instance.stop()


def test_reset_identity_lets_a_deactivated_instance_activate_again(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")])
    leaf = start_instance(tmp_path, "line1-leaf", parent=root, repositories=["factory/*"])
    try:
        old_id = wait_until(lambda: (lambda s: s["activation"]["instanceId"] if s["activation"]["status"] == "Active"
                                     else None)(status_of(leaf)), what="the leaf Active")
        sync_name, sync_password, _ = sync_token_for("line1-leaf")
        assert cli("deactivate", "line1-leaf", "--registry", root.url, "--username", sync_name,
                   "--password", sync_password).returncode == 0
        wait_until(lambda: "DEACTIVATED" in codes(status_of(leaf)), what="DEACTIVATED")
        refused = cli("sync-now", "--registry", leaf.url, "--username", OPERATOR[0], "--password", OPERATOR[1],
                      "--timeout", "30")
        assert refused.returncode == 1 and "no longer syncs" in refused.stderr and "reset-identity" in refused.stderr, \
            refused.stdout + refused.stderr
        leaf.process.stop()
        result = cli("reset-identity", "--data", str(leaf.process.data_dir))
        assert result.returncode == 0 and old_id in result.stdout, result.stdout + result.stderr
        leaf.process.restart()
        status = wait_until(lambda: (lambda s: s if s["activation"]["status"] == "Active" else None)(status_of(leaf)),
                            what="Active with a new identity")
        assert status["activation"]["instanceId"] != old_id
    finally:
        leaf.stop()
        root.stop()


def test_a_readwrite_child_under_a_readonly_parent_is_refused(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("plant-middle", "ReadOnly")])
    middle = start_instance(tmp_path, "plant-middle", parent=root, mode="ReadOnly", children=[("line1-writer", "ReadWrite")])
    child = start_instance(tmp_path, "line1-writer", parent=middle, mode="ReadWrite", repositories=["factory/*"])
    try:
        refused = wait_until(lambda: (lambda s: s if "MODE_INCOMPATIBLE" in codes(s) else None)(status_of(child)),
                             what="MODE_INCOMPATIBLE")
        assert refused["connectionState"] == "Unhealthy" and refused["activation"]["status"] == "Inactive"
        detail = next(d for d in refused["statusDetails"] if d["code"] == "MODE_INCOMPATIBLE")
        assert "ReadOnly" in detail["description"]
    finally:
        for instance in (child, middle, root):
            instance.stop()


def test_a_child_started_before_its_parent_activates_once_the_parent_answers(tmp_path: Path):
    """An unreachable parent is not a plain parent: the child keeps asking, and activates when the parent is up."""
    port = free_port()
    parent_address = type("Address", (), {"url": f"http://127.0.0.1:{port}", "host": f"127.0.0.1:{port}"})()
    leaf = start_instance(tmp_path, "line1-leaf", parent=parent_address, repositories=["factory/*"])
    root = None
    try:
        wait_until(lambda: "PARENT_UNREACHABLE" in codes(status_of(leaf)), what="the first failed attempt")
        root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")], port=port)
        document = wait_until(lambda: (lambda d: d if d["activation"]["status"] == "Active" else None)(status_of(leaf)),
                              timeout=60, what="the leaf's activation")
        assert document["parent"]["kind"] == "connected" and "PARENT_NOT_CONNECTED" not in codes(document)
    finally:
        leaf.stop()
        if root is not None:
            root.stop()
