"""The IoT Edge deployment files, checked statically (no container engine builds here): both templates' desired
properties validate with DesiredProperties once their variables are filled in, the lower layer takes everything from
its parent, the Dockerfiles copy paths that exist and install the package as the README says, and module.json names
both Dockerfiles."""

from __future__ import annotations

import json
import re
import tomllib

import pytest

from connected_registry.auth.passwords import hash_password
from connected_registry.edge.audit_output import OUTPUT as AUDIT_OUTPUT
from connected_registry.environment import parse_connection_string, resolve_parent_endpoint
from connected_registry.settings import validate_desired
from tests.support.processes import REPO_ROOT

# What an operator fills in before `az iot edge set-modules` (README: envsubst with exactly these names). The IoT Edge
# runtime's own `$upstream` and `$IOTEDGE_PARENTHOSTNAME` stay as they are.
_HASH = hash_password("a-password-for-the-template-test")
VARIABLES = {
    "CONTAINER_REGISTRY_ADDRESS": "contoso.azurecr.io", "CONTAINER_REGISTRY_USERNAME": "contoso-pull",
    "CONTAINER_REGISTRY_PASSWORD": "secret", "MODULE_VERSION": "0.1.0",
    "ACR_REGISTRY_CONNECTION_STRING": "ConnectedRegistryName=factory-top;SyncTokenName=factory-top-sync;"
                                      "SyncTokenPassword=secret;ParentGatewayEndpoint=contoso.westeurope.data.azurecr.io;"
                                      "ParentEndpointProtocol=https",
    "TOP_LAYER_NAME": "factory-top", "LOWER_LAYER_NAME": "line1-lower", "REPOSITORIES_PREFIX": "factory",
    "LOWER_LAYER_SYNC_TOKEN_HASH": _HASH, "LOWER_LAYER_SYNC_TOKEN_PASSWORD": "secret",
    "OPERATOR_TOKEN_NAME": "factory-operator", "OPERATOR_TOKEN_HASH": _HASH,
    "CLIENT_TOKEN_NAME": "line1-devices", "CLIENT_TOKEN_HASH": _HASH,
}
RUNTIME_KEYWORDS = {"upstream", "IOTEDGE_PARENTHOSTNAME", "edgeAgent", "edgeHub", "schema"}
TEMPLATES = ["deployment.template.json", "deployment.lower.template.json"]
DOCKERFILES = {"amd64": "Dockerfile.amd64", "arm64v8": "Dockerfile.arm64v8"}


def _variables(text: str) -> set[str]:
    return set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text))


def _render(name: str) -> dict:
    text = (REPO_ROOT / name).read_text()
    unknown = _variables(text) - set(VARIABLES) - RUNTIME_KEYWORDS
    assert not unknown, f"{name} uses variables the README does not list: {sorted(unknown)}"
    for variable, value in VARIABLES.items():
        text = re.sub(r"\$\{?" + variable + r"\}?(?![A-Za-z0-9_])", lambda _: value, text)
    return json.loads(text)["modulesContent"]


def _create_options(module: dict) -> dict:
    options = module["settings"]["createOptions"]
    assert isinstance(options, str), "IoT Hub takes createOptions as a JSON string (az iot edge set-modules sends it as is)"
    return json.loads(options)


def test_the_readme_lists_every_template_variable():
    readme = (REPO_ROOT / "README.md").read_text()
    missing = [name for name in VARIABLES if f"${name}" not in readme]
    assert not missing, f"README's deployment section does not explain {missing}"


@pytest.mark.parametrize("template", TEMPLATES)
def test_the_desired_properties_in_the_template_validate(template: str):
    desired = _render(template)["connected-registry"]["properties.desired"]
    settings = validate_desired(desired)
    assert settings.unknown_keys == []
    assert settings.tokens, "the template's module needs tokens: nothing could use it otherwise"


@pytest.mark.parametrize("template", TEMPLATES)
def test_the_module_keeps_its_data_in_a_named_volume_listens_on_8080_and_publishes_no_metrics(template: str):
    content = _render(template)
    modules = content["$edgeAgent"]["properties.desired"]["modules"]
    module = modules["connected-registry"]
    options = _create_options(module)
    binds = options["HostConfig"]["Binds"]
    assert any(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*:/var/acr/data", bind) for bind in binds), binds  # not a host path
    assert options["HostConfig"]["PortBindings"]["8080/tcp"]
    # /metrics (port 9600) is for the metrics collector on the module network: no module publishes it on the host
    for name, other in modules.items():
        published = _create_options(other).get("HostConfig", {}).get("PortBindings", {})
        assert "9600/tcp" not in published, f"{template}: {name} publishes the metrics port on the host"
    assert "ACR_REGISTRY_CONNECTION_STRING" in module["env"]
    proxy = modules["IoTEdgeAPIProxy"]
    assert proxy["env"]["CONNECTED_ACR_ROUTE_ADDRESS"]["value"] == "connected-registry:8080"  # /v2 and /acr to us
    assert proxy["env"]["NGINX_DEFAULT_PORT"]["value"] == "8000"
    assert _create_options(proxy)["HostConfig"]["PortBindings"]["8000/tcp"]


@pytest.mark.parametrize("template", TEMPLATES)
def test_edgehub_routes_the_modules_audit_output_to_iot_hub(template: str):
    content = _render(template)
    assert "connected-registry" in content["$edgeAgent"]["properties.desired"]["modules"]
    routes = content["$edgeHub"]["properties.desired"]["routes"].values()
    route = f"FROM /messages/modules/connected-registry/outputs/{AUDIT_OUTPUT} INTO $upstream"
    assert route in [entry if isinstance(entry, str) else entry["route"] for entry in routes]


def test_the_lower_layer_takes_every_image_from_its_parent_and_is_read_only(monkeypatch):
    content = _render("deployment.lower.template.json")
    agent = content["$edgeAgent"]["properties.desired"]
    images = [module["settings"]["image"] for module in [*agent["systemModules"].values(), *agent["modules"].values()]]
    assert images and all(image.startswith("$upstream:8000/") for image in images), images
    assert [c["address"] for c in agent["runtime"]["settings"]["registryCredentials"].values()] == ["$upstream:8000"]
    settings = validate_desired(content["connected-registry"]["properties.desired"])
    assert settings.mode == "ReadOnly"
    connection = parse_connection_string(agent["modules"]["connected-registry"]["env"]
                                         ["ACR_REGISTRY_CONNECTION_STRING"]["value"])
    assert connection["ParentGatewayEndpoint"] == "$IOTEDGE_PARENTHOSTNAME:8000"
    monkeypatch.setenv("IOTEDGE_PARENTHOSTNAME", "plant-gateway")
    assert resolve_parent_endpoint(connection["ParentGatewayEndpoint"],
                                   connection["ParentEndpointProtocol"]) == "https://plant-gateway:8000"
    # the top layer syncs what the lower layer's edgeAgent pulls through it
    top = validate_desired(_render("deployment.template.json")["connected-registry"]["properties.desired"])
    for image in images:
        repository = image.removeprefix("$upstream:8000/").split(":")[0]
        assert any(pattern == repository or (pattern.endswith("/*") and repository.startswith(pattern[:-1]))
                   for pattern in top.repositories), f"the top layer does not sync {repository}"
    lower_sync = top.tokens["line1-lower-sync"]
    assert "gateway/line1-lower/message/read" in lower_sync.actions and "repositories/*/content/read" in lower_sync.actions


@pytest.mark.parametrize("platform", DOCKERFILES)
def test_the_dockerfile_builds_from_a_slim_python_runs_as_1000_and_copies_what_exists(platform: str):
    text = (REPO_ROOT / DOCKERFILES[platform]).read_text()
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M).group(1)  # the default; the tests build on their own base
    expected_prefix = "python:3.11-slim" if platform == "amd64" else "arm64v8/python:3.11-slim"
    assert base.startswith(expected_prefix), base
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert (REPO_ROOT / source).exists(), f"{DOCKERFILES[platform]} copies {source}, which does not exist"
    assert re.search(r"^USER 1000(:1000)?$", text, re.M)
    assert "chown -R 1000:1000 /var/acr" in text and "mkdir -p /var/acr/data" in text
    assert re.search(r'^VOLUME \["/var/acr/data"\]$', text, re.M)
    assert re.search(r"^EXPOSE 8080 9600$", text, re.M)  # the registry, and /metrics for the metrics collector
    assert re.search(r"^HEALTHCHECK .*/healthz", text, re.M)
    assert re.search(r'^ENTRYPOINT \["connected-registry", "serve"', text, re.M)


def test_the_two_dockerfiles_differ_only_in_the_default_base():
    amd64, arm64 = ((REPO_ROOT / DOCKERFILES[platform]).read_text().splitlines() for platform in ("amd64", "arm64v8"))
    differing = [(left, right) for left, right in zip(amd64, arm64) if left != right]
    assert len(amd64) == len(arm64) and differing == [("ARG BASE_IMAGE=python:3.11-slim-bookworm",
                                                       "ARG BASE_IMAGE=arm64v8/python:3.11-slim-bookworm")], differing


def test_both_dockerfiles_install_the_package_as_the_readme_says():
    readme = (REPO_ROOT / "README.md").read_text()
    installs = {platform: re.findall(r"^RUN (pip install [^&\n]+?)\s*(?:&&|$)", (REPO_ROOT / name).read_text(), re.M)
                for platform, name in DOCKERFILES.items()}
    assert installs["amd64"] == installs["arm64v8"] and len(installs["amd64"]) == 1, installs
    assert installs["amd64"][0] in readme, f"README does not show {installs['amd64'][0]!r}"


def test_module_json_names_both_dockerfiles_and_the_package_version():
    module = json.loads((REPO_ROOT / "module.json").read_text())
    platforms = module["image"]["tag"]["platforms"]
    assert set(platforms) == set(DOCKERFILES)
    for platform, path in platforms.items():
        assert (REPO_ROOT / path).resolve() == (REPO_ROOT / DOCKERFILES[platform]).resolve()
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert module["image"]["tag"]["version"] == version
    assert module["image"]["repository"].endswith("/connected-registry")
