"""The environment Azure's connected registry reads (SPEC 3), parsed the same way."""

from __future__ import annotations

import os
import re
import socket

from connected_registry.errors import ConfigInvalid
from connected_registry.identity import INSTANCE_NAME_RE


def parse_connection_string(value: str | None) -> dict[str, str]:
    """`ConnectedRegistryName=..;SyncTokenName=..;SyncTokenPassword=..;ParentGatewayEndpoint=..;ParentEndpointProtocol=..`

    Values may contain '=' (passwords do); empty segments are ignored.
    """
    fields: dict[str, str] = {}
    for segment in (value or "").split(";"):
        key, sep, field_value = segment.partition("=")
        if sep and key.strip():
            fields[key.strip()] = field_value.strip()
    return fields


def sync_token_password(connection: dict[str, str]) -> str | None:
    path = os.environ.get("SYNC_TOKEN_PASSWORD_FILE")
    if path:
        with open(path, encoding="utf-8") as file:
            return file.read().strip()
    return connection.get("SyncTokenPassword")


_AZURE_DATA_ENDPOINT = re.compile(r"^(?P<registry>[A-Za-z0-9]+)\.[A-Za-z0-9-]+\.data\.azurecr\.io(?P<port>:\d+)?$")


def resolve_parent_endpoint(endpoint: str, protocol: str | None = None) -> str:
    """`https://host[:port]`, `http://host[:port]` or `host[:port]` (https); `$upstream` and
    `$IOTEDGE_PARENTHOSTNAME` stand for the parent device, `$upstream` without a port meaning 8000."""
    endpoint = endpoint.strip().rstrip("/")
    scheme = "https"
    if "://" in endpoint:
        scheme, endpoint = endpoint.split("://", 1)
    elif protocol:
        scheme = protocol.lower()
    parent_host = os.environ.get("IOTEDGE_PARENTHOSTNAME", "")
    if endpoint.startswith("$upstream"):
        rest = endpoint[len("$upstream"):]
        endpoint = parent_host + (rest if rest else ":8000")
    endpoint = endpoint.replace("$IOTEDGE_PARENTHOSTNAME", parent_host)
    azure = _AZURE_DATA_ENDPOINT.match(endpoint)
    if azure:  # Azure's connection strings name the data endpoint; the OCI API and tokens are at the login server
        endpoint = f"{azure.group('registry')}.azurecr.io{azure.group('port') or ''}"
    return f"{scheme}://{endpoint}"


def device_id() -> str:
    return os.environ.get("IOTEDGE_DEVICEID") or socket.gethostname()


def with_environment(settings):
    """The desired properties completed from the environment (SPEC 3): `name` from ConnectedRegistryName,
    `parent.endpoint` from ACR_PARENT_GATEWAY_ENDPOINT or ParentGatewayEndpoint, `parent.syncToken.name` from
    SyncTokenName. The twin (or file) overrides the environment field by field."""
    from connected_registry.settings import ParentSettings  # pydantic: the embedded default never loads it


    connection = parse_connection_string(os.environ.get("ACR_REGISTRY_CONNECTION_STRING"))
    update: dict = {}
    name = connection.get("ConnectedRegistryName")
    if settings.name is None and name:
        if not INSTANCE_NAME_RE.match(name):
            raise ConfigInvalid([f"ConnectedRegistryName {name!r} in ACR_REGISTRY_CONNECTION_STRING is not a name: "
                                 "5 to 40 letters, digits, '_' or '-', starting with a letter"])
        update["name"] = name
    parent = settings.parent
    endpoint = os.environ.get("ACR_PARENT_GATEWAY_ENDPOINT") or connection.get("ParentGatewayEndpoint")
    if endpoint and (parent is None or parent.endpoint is None):
        parent = (parent or ParentSettings()).model_copy(update={"endpoint": endpoint})
    token_name = connection.get("SyncTokenName")
    if parent is not None and parent.syncToken.name is None and token_name:
        parent = parent.model_copy(update={"syncToken": parent.syncToken.model_copy(update={"name": token_name})})
    if parent is not settings.parent:
        update["parent"] = parent
    return settings.model_copy(update=update) if update else settings
