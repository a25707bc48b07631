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
