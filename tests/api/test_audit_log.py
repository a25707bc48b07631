"""The audit log outside IoT Edge (`logging.auditLogStatus`): a real `serve` with a --config file writes one JSON
record per login, pull, push, delete, refusal and control action into its data volume, with the token, the client
(behind trustedProxies, the forwarded one) and the request id, never a password or a token; the setting applies
without a restart, a bad value keeps the last good configuration, and Disabled writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.http import basic, bearer, request
from tests.support.oci import image_manifest, sha256
from tests.support.processes import wait_until
from tests.sync.hierarchy import OPERATOR, READER, WRITER, start_instance

NAME = "factory-root"
FORWARDED_CLIENT = "203.0.113.7"


@pytest.fixture
def instance(tmp_path: Path):
    running = start_instance(tmp_path, NAME, extra={"trustedProxies": ["127.0.0.1"], "$version": 1})
    try:
        yield running
    finally:
        running.stop()


def audit_records(instance) -> list[dict]:
    folder = instance.process.data_dir / "audit"
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.read_text().splitlines()]


def audit_bytes(instance) -> bytes:
    return b"".join(path.read_bytes() for path in sorted((instance.process.data_dir / "audit").glob("*.jsonl")))


def reported(instance) -> dict:
    try:
        return json.loads((instance.config_path.parent / "reported.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def configure(instance, logging: dict, valid: bool = True) -> None:
    """A new configuration, and the wait until the instance says it applied it, or refused it (reported.json)."""
    version = instance.document["$version"] + 1
    instance.document.update({"$version": version, "logging": logging})
    instance.write_config()
    if valid:
        wait_until(lambda: reported(instance).get("appliedDesiredVersion") == version, timeout=20,
                   what=f"desired $version {version} applied")
    else:
        wait_until(lambda: any(d["code"] == "CONFIG_INVALID" for d in reported(instance).get("statusDetails", [])),
                   timeout=20, what=f"desired $version {version} refused")


def call(instance, path: str, request_id: str, method: str = "GET", body: bytes | None = None,
         headers: dict | None = None):
    return request(f"{instance.url}{path}", method, body, {"X-Request-Id": request_id, **(headers or {})})


def by_request(instance, request_id: str) -> list[dict]:
    """The records of one request, once there are any: they are written as its answer is sent, so may come a moment
    after the client has it (all of one request's records are written together)."""
    def written():
        return [record for record in audit_records(instance) if record["requestId"] == request_id]

    return wait_until(written, timeout=10, what=f"the audit records of request {request_id}")


def recorded_none(instance, request_id: str) -> bool:
    """No record of `request_id`, checked once a request made after it has its record."""
    call(instance, "/v2/_catalog", f"after-{request_id}")
    by_request(instance, f"after-{request_id}")
    return not [record for record in audit_records(instance) if record["requestId"] == request_id]


def push_layers(instance, headers: dict) -> bytes:
    config, layer = b'{"os":"linux"}', b"audited layer"
    for blob in (config, layer):
        reply = request(f"{instance.url}/v2/factory/app/blobs/uploads/?digest={sha256(blob)}", "POST", blob, headers)
        assert reply.status == 201, reply.body
    return image_manifest(config, [layer])


def test_every_audited_request_leaves_one_record_with_who_what_and_whence(instance):
    configure(instance, {"auditLogStatus": "Enabled"})
    forwarded = {"X-Forwarded-For": FORWARDED_CLIENT}
    scope = "scope=repository:factory/app:pull,push,delete"
    issued = call(instance, f"/acr/oauth2/token?service={NAME}&{scope}", "login-ok",
                  headers={**basic(*WRITER), **forwarded}).json()["access_token"]
    assert call(instance, f"/acr/oauth2/token?service={NAME}", "login-bad",
                headers=basic(WRITER[0], "not-the-password")).status == 401
    manifest = push_layers(instance, bearer(issued))
    manifest_type = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    assert call(instance, "/v2/factory/app/manifests/1.0", "push", "PUT", manifest,
                {**bearer(issued), **manifest_type, **forwarded}).status == 201
    assert call(instance, "/v2/factory/app/manifests/1.0", "pull", headers=bearer(issued)).status == 200
    assert call(instance, "/v2/factory/app/manifests/2.0", "refused", "PUT", manifest,
                {**basic(*READER), **manifest_type}).status == 403
    assert call(instance, f"/v2/factory/app/manifests/{sha256(manifest)}", "delete", "DELETE",
                headers=bearer(issued)).status == 202
    assert call(instance, "/acr/connected/v1/gc", "control", "POST", b"", basic(*OPERATOR)).status == 202
    assert call(instance, "/v2/_catalog", "anonymous").status == 401
    assert call(instance, "/v2/factory/app/blobs/" + sha256(b"audited layer"), "blob-read",
                headers=bearer(issued)).status == 200

    login = by_request(instance, "login-ok")
    assert [(r["action"], r["result"], r["token"], r["client"], r["status"]) for r in login] == [
        ("login", "success", WRITER[0], FORWARDED_CLIENT, 200)]
    [failed] = by_request(instance, "login-bad")
    assert (failed["action"], failed["result"], failed["token"], failed["code"]) == (
        "login", "failure", WRITER[0], "UNAUTHORIZED")
    [push] = by_request(instance, "push")
    assert (push["action"], push["result"], push["repository"], push["reference"], push["digest"],
            push["client"]) == ("push", "success", "factory/app", "1.0", sha256(manifest), FORWARDED_CLIENT)
    [pull] = by_request(instance, "pull")
    assert (pull["action"], pull["token"], pull["digest"], pull["client"]) == (
        "pull", WRITER[0], sha256(manifest), "127.0.0.1")
    # Basic credentials: the login (its password checked) and what it tried, both with the request's answer
    assert [(r["action"], r["result"], r["token"], r["code"]) for r in by_request(instance, "refused")] == [
        ("login", "success", READER[0], "DENIED"), ("push", "refused", READER[0], "DENIED")]
    [delete] = by_request(instance, "delete")
    assert (delete["action"], delete["result"], delete["reference"]) == ("delete", "success", sha256(manifest))
    control = [r for r in by_request(instance, "control") if r["action"] == "control"]
    assert [(r["result"], r["token"], r["path"], r["status"]) for r in control] == [
        ("success", OPERATOR[0], "/acr/connected/v1/gc", 202)]
    [anonymous] = by_request(instance, "anonymous")
    assert (anonymous["action"], anonymous["result"], anonymous["token"]) == ("access", "refused", None)
    assert recorded_none(instance, "blob-read")  # a blob read is not one of the audited actions

    numbers = [record["seq"] for record in audit_records(instance)]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    raw = audit_bytes(instance)
    for secret in (WRITER[1], READER[1], OPERATOR[1], "not-the-password", issued, issued.split(".")[2]):
        assert secret.encode() not in raw


def test_the_setting_applies_without_a_restart_and_a_bad_value_keeps_the_last_good_one(instance):
    assert call(instance, "/v2/_catalog", "while-disabled").status == 401
    assert not (instance.process.data_dir / "audit").exists()  # Disabled (the default): nothing written

    configure(instance, {"auditLogStatus": "Enabled"})
    call(instance, "/v2/_catalog", "enabled")
    assert [r["action"] for r in by_request(instance, "enabled")] == ["access"]

    configure(instance, {"auditLogStatus": "On"}, valid=False)
    [invalid] = [d for d in reported(instance)["statusDetails"] if d["code"] == "CONFIG_INVALID"]
    assert "logging.auditLogStatus" in invalid["description"]
    call(instance, "/v2/_catalog", "kept")
    assert by_request(instance, "kept"), "a bad value must keep the last good configuration (Enabled)"

    configure(instance, {"auditLogStatus": "Disabled"})
    written = audit_bytes(instance)
    call(instance, "/v2/_catalog", "disabled-again")
    call(instance, "/v2/_catalog", "disabled-again", headers=basic(READER[0], "wrong"))
    assert audit_bytes(instance) == written
