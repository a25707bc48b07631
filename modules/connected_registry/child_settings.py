"""`get-settings`: the environment block of a child's deployment manifest, spelled as `az acr connected-registry
get-settings` prints it, and the sync token the parent needs for that child (SPEC 10, 13)."""

from __future__ import annotations

CERTIFICATE_VOLUME = "/var/acr/certs"
DATA_VOLUME = "/var/acr/data"
PASSWORD_PLACEHOLDER = "<use --generate-password to generate a new password>"
LOGIN_SERVER_PLACEHOLDER = "<Optional: connected registry login server. More info at https://aka.ms/acr/connected-registry>"
GATEWAY_ACTIONS = ("config/read", "config/write", "message/read", "message/write")
# What a child's sync token may do on its repositories at the parent, by the child's mode (Azure's CLI does the same).
REPOSITORY_ACTIONS = {"ReadOnly": ("content/read", "metadata/read"),
                      "ReadWrite": ("content/read", "content/write", "content/delete", "metadata/read",
                                    "metadata/write")}
_TOKEN_SUFFIX = "-sync-token"


def default_sync_token_name(child: str) -> str:
    """`<child>-sync-token`, as Azure's docs name it, within the token name rules (5 to 50 of A-Z, 0-9, '-')."""
    return child.replace("_", "-")[: 50 - len(_TOKEN_SUFFIX)] + _TOKEN_SUFFIX


def parent_gateway(endpoint: str) -> tuple[str, str]:
    """`https://host:port`, `http://host:port` or `host:port` -> (ParentGatewayEndpoint, ParentEndpointProtocol)."""
    endpoint = endpoint.strip().rstrip("/")
    if "://" in endpoint:
        scheme, host = endpoint.split("://", 1)
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"--parent-endpoint {endpoint!r}: the protocol must be http or https")
        return host, scheme
    return endpoint, "https"


def connection_string(child: str, token_name: str, password: str, endpoint: str) -> str:
    gateway, protocol = parent_gateway(endpoint)
    return (f"ConnectedRegistryName={child};SyncTokenName={token_name};SyncTokenPassword={password};"
            f"ParentGatewayEndpoint={gateway};ParentEndpointProtocol={protocol}")


def settings(child: str, endpoint: str, token_name: str, password: str | None) -> dict[str, str]:
    """The keys `az acr connected-registry get-settings` returns, with the placeholders it prints."""
    return {
        "ACR_REGISTRY_CERTIFICATE_VOLUME": CERTIFICATE_VOLUME,
        "ACR_REGISTRY_CONNECTION_STRING": connection_string(child, token_name, password or PASSWORD_PLACEHOLDER,
                                                            endpoint),
        "ACR_REGISTRY_DATA_VOLUME": DATA_VOLUME,
        "ACR_REGISTRY_LOGIN_SERVER": LOGIN_SERVER_PLACEHOLDER,
        "SYNC_TOKEN_PASSWORD": password or PASSWORD_PLACEHOLDER,
        "SYNC_TOKEN_USER": token_name,
    }


def sync_token_actions(child: str, mode: str, repositories: list[str]) -> list[str]:
    """The child's gateway actions, and its repositories' actions for its mode."""
    actions = [f"gateway/{child}/{action}" for action in GATEWAY_ACTIONS]
    for repository in repositories:
        actions += [f"repositories/{repository.lower()}/{action}" for action in REPOSITORY_ACTIONS[mode]]
    return actions


def manifest_env(values: dict[str, str]) -> dict[str, dict[str, str]]:
    """The same values as an IoT Edge deployment manifest's module `env` section."""
    return {key: {"value": value} for key, value in values.items()
            if key.startswith("ACR_") and not value.startswith("<Optional")}
