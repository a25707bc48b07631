"""Refused uploads are parked without blocking other repositories; the operator lists, retries, drops them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.http import basic, request
from tests.support.layouts import make_image
from tests.support.processes import wait_until
from tests.sync.hierarchy import BOTH_TOP_TIERS, start_instance, sync_token_for, token
from tests.sync.instance_api import codes, digest_at, outbox, skopeo_push, status_of

pytestmark = BOTH_TOP_TIERS  # the parent's side on the embedded stores and as a scale-out replica


def test_a_refused_entry_is_parked_and_does_not_block_other_repositories(tmp_path: Path):
    sync_name, sync_password, _ = sync_token_for("plant-middle", "ReadWrite")
    limited = token(sync_password, [f"gateway/plant-middle/{a}" for a in
                                    ("config/read", "config/write", "message/read", "message/write")]
                    + ["repositories/*/content/read", "repositories/*/metadata/read",
                       "repositories/factory/app/content/write"])
    root = start_instance(tmp_path, "factory-root")
    root.document["tokens"][sync_name] = limited
    root.write_config()
    middle = start_instance(tmp_path, "plant-middle", parent=root, mode="ReadWrite", repositories=["factory/*"])
    try:
        layout = tmp_path / "layout"
        locked, allowed = make_image(layout, "locked"), make_image(layout, "allowed")
        skopeo_push(layout, "locked", middle, "factory/locked:v1")
        skopeo_push(layout, "allowed", middle, "factory/app:v1")

        wait_until(lambda: digest_at(root, "factory/app", "v1") == allowed, timeout=40, what="the allowed push upstream")
        rejected = wait_until(lambda: (lambda s: s if "UPLOAD_REJECTED" in codes(s) else None)(status_of(middle)),
                              what="UPLOAD_REJECTED")
        detail = next(d for d in rejected["statusDetails"] if d["code"] == "UPLOAD_REJECTED")
        assert "factory/locked" in detail["description"] and "outbox retry" in detail["description"]
        assert rejected["sync"]["rejectedUploads"] == 1
        assert digest_at(root, "factory/locked", "v1") is None
        assert digest_at(middle, "factory/locked", "v1") == locked  # the local push is kept

        listing = outbox(middle, "list", "--json")
        assert listing.returncode == 0, listing.stderr
        entries = json.loads(listing.stdout)
        assert [(e["repository"], e["state"]) for e in entries] == [("factory/locked", "parked")]
        assert "401" in entries[0]["lastError"] or "403" in entries[0]["lastError"]
        human = outbox(middle, "list")
        assert "parked" in human.stdout and "factory/locked:v1" in human.stdout

        # the operator grants the write and retries: the entry goes up
        root.document["tokens"][sync_name] = token(sync_password, limited["actions"] + [
            "repositories/factory/locked/content/write"])
        root.write_config()

        def write_granted() -> bool:
            reply = request(f"{root.url}/acr/oauth2/token?service=factory-root&scope=repository:factory/locked:push",
                            headers=basic(sync_name, sync_password))
            return "push" in reply.json().get("scope", "")

        wait_until(write_granted, what="the root to apply the new token")
        result = outbox(middle, "retry", str(entries[0]["id"]))
        assert result.returncode == 0 and "queued again" in result.stdout, result.stderr
        wait_until(lambda: digest_at(root, "factory/locked", "v1") == locked, timeout=40, what="the retried push upstream")
        wait_until(lambda: "UPLOAD_REJECTED" not in codes(status_of(middle)), what="UPLOAD_REJECTED cleared")

        # drop: a parked entry can be discarded
        skopeo_push(layout, "allowed", middle, "factory/other:v1")
        parked = wait_until(lambda: [e for e in json.loads(outbox(middle, "list", "--json").stdout)
                                     if e["state"] == "parked"], what="a second parked entry")
        result = outbox(middle, "drop", str(parked[0]["id"]))
        assert result.returncode == 0 and "dropped" in result.stdout
        assert json.loads(outbox(middle, "list", "--json").stdout) == []
    finally:
        middle.stop()
        root.stop()
