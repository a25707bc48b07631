"""Audit records through edgeHub: a module under the simulated runtime (the real SDK, mosquitto as edgeHub) sends its
audit records as output messages on `auditLogs` (the topic edgeHub's routes read), each a JSON array within IoT Hub's
256 KB, at most one a second; none carries a password or a token; records written while edgeHub is away wait in the
volume and arrive, oldest first, once it is back; a twin patch turns the audit off and on."""

from __future__ import annotations

import http.client
import json

import pytest

from connected_registry.audit import FIELDS
from tests.edge.modules import MODULE_NAME, edge_module_under
from tests.support.edge_outputs import ModuleOutputs
from tests.support.http import basic, bearer, request
from tests.support.oci import image_manifest, sha256
from tests.sync.hierarchy import READER, WRITER, client_tokens, token

OPERATOR = ("edge-operator", "edge-operator-password")
IOT_HUB_MESSAGE_BYTES = 256 * 1024
SECRETS = (WRITER[1], READER[1], OPERATOR[1], "not-the-password")


@pytest.fixture(scope="module")
def module(tmp_path_factory, edge_pki):
    """A root module with audit logs Enabled, and edgeHub's side of its outputs."""
    tokens = {**client_tokens(), OPERATOR[0]: token(OPERATOR[1], [f"gateway/{MODULE_NAME}/config/write"])}
    desired = {"tokens": tokens, "logging": {"auditLogStatus": "Enabled"}, "reportInterval": "PT10S"}
    with edge_module_under(tmp_path_factory.mktemp("audit-edge"), edge_pki, desired, root=None) as running:
        runtime = running.runtime
        outputs = ModuleOutputs(runtime.address, edge_pki.ca_cert, runtime.device_id, runtime.module_id)
        try:
            yield running, outputs
        finally:
            outputs.stop()


def records_on_audit_output(outputs: ModuleOutputs) -> list[dict]:
    return [record for message in outputs.on_output("auditLogs") for record in json.loads(message.payload)]


def wait_for_requests(outputs: ModuleOutputs, request_ids: set[str], timeout: float = 60) -> list[dict]:
    def arrived():
        records = records_on_audit_output(outputs)
        return records if request_ids <= {record["requestId"] for record in records} else None

    return outputs.wait(lambda _: arrived(), timeout, f"audit records of {sorted(request_ids)[:5]}...")


def call(url: str, request_id: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    return request(url, method, body, {"X-Request-Id": request_id, **(headers or {})})


def test_records_arrive_on_the_audit_output_with_their_fields_and_no_secret(module):
    running, outputs = module
    url = running.process.url
    issued = call(f"{url}/acr/oauth2/token?service={MODULE_NAME}&scope=repository:factory/app:pull,push", "e-login",
                  headers=basic(*WRITER)).json()["access_token"]
    assert call(f"{url}/acr/oauth2/token?service={MODULE_NAME}", "e-login-bad",
                headers=basic(READER[0], "not-the-password")).status == 401
    config, layer = b'{"os":"linux"}', b"a layer audited at the edge"
    for blob in (config, layer):
        assert request(f"{url}/v2/factory/app/blobs/uploads/?digest={sha256(blob)}", "POST", blob,
                       bearer(issued)).status == 201
    manifest = image_manifest(config, [layer])
    media_type = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    assert call(f"{url}/v2/factory/app/manifests/1.0", "e-push", "PUT", manifest,
                {**bearer(issued), **media_type}).status == 201
    assert call(f"{url}/v2/factory/app/manifests/1.0", "e-pull", headers=bearer(issued)).status == 200
    assert call(f"{url}/v2/factory/app/manifests/1.0", "e-delete", "DELETE", headers=basic(*READER)).status == 403
    assert call(f"{url}/acr/connected/v1/gc", "e-control", "POST", b"", basic(*OPERATOR)).status == 202

    records = wait_for_requests(outputs, {"e-login", "e-login-bad", "e-push", "e-pull", "e-delete", "e-control"})
    messages = outputs.on_output("auditLogs")
    assert all(m.properties["$.ct"] == "application/json" and m.properties["$.ce"] == "utf-8" for m in messages)
    assert all(list(record) == list(FIELDS) and record["registry"] == MODULE_NAME for record in records)
    seen = {(r["requestId"], r["action"]): r for r in records}
    assert (seen["e-login", "login"]["result"], seen["e-login", "login"]["token"]) == ("success", WRITER[0])
    assert (seen["e-login-bad", "login"]["result"], seen["e-login-bad", "login"]["token"]) == ("failure", READER[0])
    push, pull = seen["e-push", "push"], seen["e-pull", "pull"]
    assert (push["result"], push["repository"], push["reference"], push["digest"]) == (
        "success", "factory/app", "1.0", sha256(manifest))
    assert (pull["result"], pull["token"], pull["digest"], pull["client"]) == (
        "success", WRITER[0], sha256(manifest), "127.0.0.1")
    assert (seen["e-delete", "delete"]["result"], seen["e-delete", "delete"]["code"]) == ("refused", "DENIED")
    assert (seen["e-control", "control"]["result"], seen["e-control", "control"]["token"]) == ("success", OPERATOR[0])
    raw = b"".join(message.topic.encode() + message.payload for message in outputs.messages)
    for secret in (*SECRETS, issued, issued.split(".")[2]):
        assert secret.encode() not in raw


def test_records_written_while_edgehub_is_away_arrive_oldest_first_once_it_is_back(module):
    running, outputs = module
    broker = running.runtime.broker
    long_name = "factory/" + "/".join(["offline-line"] * 16)  # larger records: the backlog needs several messages
    broker.stop()
    request_ids = [f"away-{index:04d}" for index in range(900)]
    connection = http.client.HTTPConnection("127.0.0.1", running.process.port, timeout=30)
    try:
        for request_id in request_ids:  # refused (no credentials): one record each
            connection.request("GET", f"/v2/{long_name}/manifests/{request_id}", headers={"X-Request-Id": request_id})
            response = connection.getresponse()
            response.read()
            assert response.status == 401
    finally:
        connection.close()
    sent_before = len(outputs.on_output("auditLogs"))
    broker.start()

    wait_for_requests(outputs, set(request_ids), timeout=90)
    messages = [m for m in outputs.on_output("auditLogs")[sent_before:]
                if any(r["requestId"].startswith("away-") for r in json.loads(m.payload))]
    assert len(messages) >= 2 and all(len(m.payload) <= IOT_HUB_MESSAGE_BYTES for m in messages)
    first_arrival: dict[int, str] = {}
    for message in messages:
        for record in json.loads(message.payload):
            first_arrival.setdefault(record["seq"], record["requestId"])  # a resent message repeats records
    away = [request_id for request_id in first_arrival.values() if request_id.startswith("away-")]
    assert away == request_ids  # oldest first, none missing
    assert list(first_arrival) == sorted(first_arrival)
    gaps = [later.received - earlier.received for earlier, later in zip(messages, messages[1:])]
    assert min(gaps) >= 0.8, gaps  # at most one message a second


def test_a_twin_patch_turns_the_audit_off_and_on_without_a_restart(module):
    running, outputs = module
    url, hub = running.process.url, running.hub

    def patch(status: str) -> None:
        version = hub.patch_desired({"logging": {"auditLogStatus": status}})
        hub.wait_reported(lambda r: r.get("appliedDesiredVersion") == version, timeout=30, what=f"{status} applied")

    patch("Disabled")
    assert call(f"{url}/v2/_catalog", "while-disabled").status == 401
    patch("Enabled")
    assert call(f"{url}/v2/_catalog", "enabled-again").status == 401
    records = wait_for_requests(outputs, {"enabled-again"})
    assert "while-disabled" not in {record["requestId"] for record in records}
