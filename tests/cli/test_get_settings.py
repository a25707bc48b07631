"""`get-settings`: the child's environment as `az acr connected-registry get-settings` prints it; with
--generate-password a sync token the parent takes, which a new child then really activates and syncs with."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.http import basic, request
from tests.support.layouts import make_image
from tests.support.processes import RegistryProcess, run_cli, wait_until
from tests.sync.hierarchy import READER, client_tokens, start_instance
from tests.sync.instance_api import ACCEPT, skopeo_push

AZ_KEYS = ["ACR_REGISTRY_CERTIFICATE_VOLUME", "ACR_REGISTRY_CONNECTION_STRING", "ACR_REGISTRY_DATA_VOLUME",
           "ACR_REGISTRY_LOGIN_SERVER", "SYNC_TOKEN_PASSWORD", "SYNC_TOKEN_USER"]


def test_without_a_password_it_prints_azs_keys_and_placeholders():
    result = run_cli("get-settings", "line1-leaf", "--parent-endpoint", "http://10.0.0.4:8000")
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)
    assert list(settings) == AZ_KEYS
    assert settings["ACR_REGISTRY_CONNECTION_STRING"] == (
        "ConnectedRegistryName=line1-leaf;SyncTokenName=line1-leaf-sync-token;"
        "SyncTokenPassword=<use --generate-password to generate a new password>;"
        "ParentGatewayEndpoint=10.0.0.4:8000;ParentEndpointProtocol=http")
    assert settings["SYNC_TOKEN_PASSWORD"] == "<use --generate-password to generate a new password>"
    assert settings["SYNC_TOKEN_USER"] == "line1-leaf-sync-token"
    assert settings["ACR_REGISTRY_DATA_VOLUME"] == "/var/acr/data"
    assert settings["ACR_REGISTRY_CERTIFICATE_VOLUME"] == "/var/acr/certs"
    assert settings["ACR_REGISTRY_LOGIN_SERVER"].startswith("<Optional: connected registry login server.")
    nested = json.loads(run_cli("get-settings", "line2-leaf", "--parent-endpoint", "$IOTEDGE_PARENTHOSTNAME:8000").stdout)
    assert nested["ACR_REGISTRY_CONNECTION_STRING"].endswith(
        "ParentGatewayEndpoint=$IOTEDGE_PARENTHOSTNAME:8000;ParentEndpointProtocol=https")
    manifest = json.loads(run_cli("get-settings", "line1-leaf", "--parent-endpoint", "10.0.0.4:8000", "--manifest").stdout)
    assert set(manifest) == {"ACR_REGISTRY_CERTIFICATE_VOLUME", "ACR_REGISTRY_CONNECTION_STRING",
                             "ACR_REGISTRY_DATA_VOLUME"} and "value" in manifest["ACR_REGISTRY_CONNECTION_STRING"]


def test_bad_input_is_refused_with_what_to_do():
    bad_name = run_cli("get-settings", "x1", "--parent-endpoint", "http://p:8000")
    assert bad_name.returncode != 0 and "5 to 40" in bad_name.stderr
    bad_scheme = run_cli("get-settings", "line1-leaf", "--parent-endpoint", "ftp://p:8000")
    assert bad_scheme.returncode != 0 and "http or https" in bad_scheme.stderr
    no_scope = run_cli("get-settings", "line1-leaf", "--parent-endpoint", "http://p:8000", "--generate-password")
    assert no_scope.returncode != 0 and "--repository" in no_scope.stderr


def test_a_generated_sync_token_lets_a_new_child_activate_and_sync(tmp_path: Path):
    root = start_instance(tmp_path, "factory-root")
    child = None
    try:
        result = run_cli("get-settings", "line9-leaf", "--parent-endpoint", root.url, "--generate-password",
                         "--repository", "factory/*", "--json")
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        settings, tokens = document["settings"], document["tokens"]
        password = settings["SYNC_TOKEN_PASSWORD"]
        assert f"SyncTokenPassword={password};" in settings["ACR_REGISTRY_CONNECTION_STRING"]
        entry = tokens["line9-leaf-sync-token"]
        assert password not in json.dumps(tokens) and entry["passwordHashes"][0].startswith("scrypt$")
        assert "gateway/line9-leaf/message/read" in entry["actions"]
        assert "repositories/factory/*/content/read" in entry["actions"]
        assert not any(action.endswith("content/write") for action in entry["actions"])  # ReadOnly by default
        # The operator adds the entry to the parent's tokens (re-read at once) and deploys the child with the env.
        root.document["tokens"].update(tokens)
        root.write_config()
        layout = tmp_path / "layout"
        make_image(layout, "v1", layers=1, size="8K")
        skopeo_push(layout, "v1", root, "factory/app:v1")
        directory = tmp_path / "line9-leaf"
        directory.mkdir()
        config = directory / "desired.json"
        config.write_text(json.dumps({"name": "line9-leaf", "repositories": ["factory/*"], "tokens": client_tokens(),
                                      "parent": {"endpoint": root.url}}))
        child = RegistryProcess(directory / "data", extra_args=["--config", str(config)],
                                env={"ACR_REGISTRY_CONNECTION_STRING": settings["ACR_REGISTRY_CONNECTION_STRING"]})
        wait_until(lambda: request(f"{child.url}/v2/factory/app/manifests/v1",
                                   headers={**basic(*READER), **ACCEPT}).status == 200,
                   timeout=60, what="factory/app:v1 at the child deployed with get-settings' output")
    finally:
        if child is not None:
            child.stop()
        root.stop()
