"""What a parent's control API trusts (SPEC 6, 11; issue 14 findings 7, 8 and 11): its status and hierarchy only
for `metadata/read` on `*` or its own gateway rights, a child's report only when it fits its schema, and the event
feed and the status report only from the child's active instance, named by X-Instance-Id."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from tests.support.http import basic, request
from tests.support.processes import run_cli, wait_until
from tests.sync.hierarchy import BOTH_TOP_TIERS, OPERATOR, READER, start_instance, sync_token_for
from tests.sync.instance_api import ONE_REPOSITORY_READER, OTHER_CHILD_SYNC, activate, add_tokens, status_of

pytestmark = BOTH_TOP_TIERS  # the parent's side on the embedded stores and as a scale-out replica

OWN_GATEWAY_ONLY = ("root-watcher1", "root-watcher-password", ["gateway/factory-root/config/read"])


def test_status_and_hierarchy_need_metadata_read_on_everything_or_the_instances_gateway_rights(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")])
    try:
        add_tokens(root, ONE_REPOSITORY_READER, OTHER_CHILD_SYNC, OWN_GATEWAY_ONLY)
        for path in ("/acr/connected/v1/status", "/acr/connected/v1/registries"):
            for name, password, _ in (ONE_REPOSITORY_READER, OTHER_CHILD_SYNC):
                reply = request(f"{root.url}{path}", headers=basic(name, password))
                assert reply.status == 403, f"{name} read {path}: {reply.status} {reply.body[:200]!r}"
                assert "metadata/read on *" in reply.error_message, reply.body
            for name, password in (READER, OPERATOR, OWN_GATEWAY_ONLY[:2]):
                reply = request(f"{root.url}{path}", headers=basic(name, password))
                assert reply.status == 200 and reply.json()["name"] == "factory-root", (name, path, reply.body[:200])
    finally:
        root.stop()


def test_a_report_with_control_characters_or_a_wrong_type_is_refused_naming_the_field(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")])
    try:
        instance_id = str(uuid.uuid4())
        activate(root, "line1-leaf", instance_id)
        sync = {**basic(*sync_token_for("line1-leaf")[:2]), "X-Instance-Id": instance_id}
        # A real reported document (the root's own) as the child's, with an empty subtree: accepted.
        report = dict(status_of(root),
                      name="line1-leaf", activation={"status": "Active", "instanceId": instance_id}, children=[])
        report_url = f"{root.url}/acr/connected/v1/registries/line1-leaf/status"
        accepted = request(report_url, "POST", json.dumps(report).encode(), sync)
        assert accepted.status == 204, accepted.body

        hostile = {
            "statusDetails.0.description": {"statusDetails": [{"type": "Parent", "severity": "Error", "code": "X",
                                                               "description": "\x1b]0;owned\x07\x1b[2J"}]},
            "children.0.report.connectionState": {"children": [{"name": "line9-fake", "report": {
                "connectionState": "Online\r\x1b[1Aline9-forged  ReadOnly  Active  Online"}}]},
            "children.0.name": {"children": [{"name": "line9-\x9b31mfake"}]},
            "sync.pendingUploads": {"sync": {"pendingUploads": "many"}},
            "connectionState": {"connectionState": ["Online"]},
            "statusDetails": {"statusDetails": "broken"},
            "activation": {"activation": "Active"},
        }
        for field, change in hostile.items():
            reply = request(report_url, "POST", json.dumps({**report, **change}).encode(), sync)
            assert reply.status == 400, f"{field}: {reply.status} {reply.body[:300]!r}"
            assert f"{field}:" in reply.error_message, (field, reply.error_message)
        stored = request(f"{root.url}/acr/connected/v1/registries", headers=basic(*OPERATOR)).json()["children"][0]
        assert stored["report"]["statusDetails"] == report["statusDetails"], "a refused report was kept"
    finally:
        root.stop()


def test_a_deactivated_childs_feed_and_report_need_its_active_instance_id(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root", children=[("line1-leaf", "ReadOnly")])
    leaf = start_instance(tmp_path, "line1-leaf", parent=root, repositories=["factory/*"])
    try:
        def leaf_reported() -> dict | None:
            children = request(f"{root.url}/acr/connected/v1/registries", headers=basic(*OPERATOR)).json()["children"]
            return children[0] if children and children[0]["reportedAt"] else None

        # A real child sends its instance id with the feed and its report, and its report fits the schema.
        entry = wait_until(leaf_reported, timeout=30, what="the leaf's report at the root")
        instance_id = entry["activation"]["instanceId"]
        sync_name, sync_password, _ = sync_token_for("line1-leaf")
        sync = basic(sync_name, sync_password)
        events = f"{root.url}/acr/connected/v1/registries/line1-leaf/events"
        report = f"{root.url}/acr/connected/v1/registries/line1-leaf/status"
        assert request(events, headers={**sync, "X-Instance-Id": instance_id}).status == 200

        result = run_cli("deactivate", "line1-leaf", "--registry", root.url, "--username", sync_name,
                         "--password", sync_password)
        assert result.returncode == 0, result.stderr
        missing = request(f"{events}?cursor=1", headers=sync)
        assert missing.status == 400 and "X-Instance-Id" in missing.error_message, missing.body
        assert request(report, "POST", b"{}", sync).status == 400
        old = request(f"{events}?cursor=1", headers={**sync, "X-Instance-Id": instance_id})
        assert old.status == 409 and old.error_code == "DEACTIVATED", old.body
        unknown = request(f"{events}?cursor=1", headers={**sync, "X-Instance-Id": str(uuid.uuid4())})
        assert unknown.status == 409, unknown.body
        refused = request(report, "POST", b"{}", {**sync, "X-Instance-Id": instance_id})
        assert refused.status == 409 and refused.error_code == "DEACTIVATED", refused.body
    finally:
        leaf.stop()
        root.stop()
