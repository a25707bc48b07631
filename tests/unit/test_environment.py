"""The environment Azure's connected registry reads (SPEC 3)."""

from __future__ import annotations

from connected_registry.environment import parse_connection_string, resolve_parent_endpoint


def test_connection_string_fields_and_passwords_with_equals_signs():
    fields = parse_connection_string(
        "ConnectedRegistryName=line1;SyncTokenName=line1-sync;SyncTokenPassword=ab=cd==;"
        "ParentGatewayEndpoint=contoso.eastus.data.azurecr.io;ParentEndpointProtocol=https;")
    assert fields == {"ConnectedRegistryName": "line1", "SyncTokenName": "line1-sync", "SyncTokenPassword": "ab=cd==",
                      "ParentGatewayEndpoint": "contoso.eastus.data.azurecr.io", "ParentEndpointProtocol": "https"}
    assert parse_connection_string(None) == {} and parse_connection_string("=x;;junk") == {}


def test_parent_endpoints(monkeypatch):
    monkeypatch.setenv("IOTEDGE_PARENTHOSTNAME", "parent-device")
    assert resolve_parent_endpoint("$upstream") == "https://parent-device:8000"
    assert resolve_parent_endpoint("$upstream:443") == "https://parent-device:443"
    assert resolve_parent_endpoint("$IOTEDGE_PARENTHOSTNAME:8000", "http") == "http://parent-device:8000"
    assert resolve_parent_endpoint("http://10.0.0.5:8080/") == "http://10.0.0.5:8080"
    assert resolve_parent_endpoint("registry.local") == "https://registry.local"


def test_an_azure_data_endpoint_is_reached_at_its_login_server():
    assert resolve_parent_endpoint("contoso.eastus.data.azurecr.io", "https") == "https://contoso.azurecr.io"
    assert resolve_parent_endpoint("https://contoso.westeurope.data.azurecr.io") == "https://contoso.azurecr.io"


def test_the_environment_fills_in_what_the_desired_properties_leave_out(monkeypatch):
    import pytest

    from connected_registry.environment import with_environment
    from connected_registry.errors import ConfigInvalid
    from connected_registry.settings import validate_desired

    monkeypatch.setenv("ACR_REGISTRY_CONNECTION_STRING", "ConnectedRegistryName=line1-edge;SyncTokenName=line1-sync;"
                       "SyncTokenPassword=pw;ParentGatewayEndpoint=$IOTEDGE_PARENTHOSTNAME:8000;ParentEndpointProtocol=https")
    settings = with_environment(validate_desired({"mode": "ReadOnly"}))
    assert settings.name == "line1-edge"
    assert settings.parent.endpoint == "$IOTEDGE_PARENTHOSTNAME:8000" and settings.parent.syncToken.name == "line1-sync"
    # the twin overrides the environment field by field
    twin = with_environment(validate_desired({"name": "other-name", "parent": {"endpoint": "$upstream:9000",
                                                                              "syncProperties": {"messageTtl": "P3D"}}}))
    assert twin.name == "other-name" and twin.parent.endpoint == "$upstream:9000"
    assert twin.parent.syncToken.name == "line1-sync" and twin.parent.syncProperties.messageTtl == "P3D"
    monkeypatch.setenv("ACR_PARENT_GATEWAY_ENDPOINT", "parent.local:8000")
    assert with_environment(validate_desired({})).parent.endpoint == "parent.local:8000"
    monkeypatch.setenv("ACR_REGISTRY_CONNECTION_STRING", "ConnectedRegistryName=1bad")
    with pytest.raises(ConfigInvalid, match="ConnectedRegistryName"):
        with_environment(validate_desired({}))
    monkeypatch.delenv("ACR_REGISTRY_CONNECTION_STRING")
    monkeypatch.delenv("ACR_PARENT_GATEWAY_ENDPOINT")
    root = validate_desired({})
    assert with_environment(root) is root  # nothing in the environment: a root, unchanged
