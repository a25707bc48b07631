"""deploy/ (README, "Scale-out"): the compose file, the Kubernetes manifests, nginx's configuration and the example
desired properties parse, name only environment variables the code reads, agree with the code on ports and probes,
and nginx's proxy settings are the ones tests/support/cluster.py runs against three real replicas."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from connected_registry.cli import METRICS_PORT
from connected_registry.settings import validate_desired
from connected_registry.storage.azure.account import parse_location
from tests.support.cluster import balancer_config
from tests.support.processes import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
CODE = "\n".join(path.read_text() for path in (REPO_ROOT / "modules").rglob("*.py"))
REGISTRY_PORT = int(re.search(r'"--listen", "0\.0\.0\.0:(\d+)"', (REPO_ROOT / "Dockerfile.amd64").read_text()).group(1))


def _documents(name: str) -> list[dict]:
    return [document for document in yaml.safe_load_all((DEPLOY / name).read_text()) if document]


def _compose() -> dict:
    return _documents("compose.yaml")[0]


def _deployment() -> dict:
    return next(d for d in _documents("kubernetes/registry.yaml") if d["kind"] == "Deployment")


def _container() -> dict:
    (container,) = _deployment()["spec"]["template"]["spec"]["containers"]
    return container


def _secret() -> dict:
    (secret,) = _documents("kubernetes/secret.example.yaml")
    return secret


def test_every_file_parses_and_kubernetes_has_three_replicas_a_service_and_a_budget():
    kinds = [document["kind"] for document in _documents("kubernetes/registry.yaml")]
    assert kinds == ["Deployment", "Service", "PodDisruptionBudget"]
    assert _deployment()["spec"]["replicas"] == 3
    assert _secret()["kind"] == "Secret"
    replicas = [name for name, service in _compose()["services"].items() if name.startswith("registry-")]
    assert len(replicas) == 3
    assert {"nginx", "postgres"} <= set(_compose()["services"])


def _compose_environment() -> dict[str, str]:
    environments = [service.get("environment", {}) for name, service in _compose()["services"].items()
                    if name.startswith("registry-")]
    assert all(environment == environments[0] for environment in environments)  # the same replica three times
    return environments[0]


def _kubernetes_environment() -> dict[str, dict]:
    return {variable["name"]: variable for variable in _container()["env"]}


@pytest.mark.parametrize("names", [_compose_environment, _kubernetes_environment], ids=["compose", "kubernetes"])
def test_the_environment_names_only_variables_the_code_reads_and_both_backends(names):
    variables = set(names())
    for variable in variables:
        assert f'"{variable}"' in CODE, f"{variable} is read nowhere in modules/"
    assert {"ACR_REGISTRY_METADATA_DSN", "ACR_REGISTRY_BLOB_STORE", "ACR_REGISTRY_BLOB_CONNECTION_STRING",
            "ACR_REGISTRY_TOKEN_KEY_FILE"} <= variables


def test_the_backends_named_are_ones_the_code_accepts():
    stores = [_compose_environment()["ACR_REGISTRY_BLOB_STORE"],
              _kubernetes_environment()["ACR_REGISTRY_BLOB_STORE"]["value"]]
    for store in stores:
        assert parse_location(store).container == "registry"
    assert _compose_environment()["ACR_REGISTRY_METADATA_DSN"].startswith("postgresql://")
    assert _secret()["stringData"]["metadata-dsn"].startswith("postgresql://")
    secret_keys = set(_secret()["stringData"])
    referenced = {variable["valueFrom"]["secretKeyRef"]["key"] for variable in _kubernetes_environment().values()
                  if "valueFrom" in variable}
    mounted = {item["key"] for volume in _deployment()["spec"]["template"]["spec"]["volumes"]
               if "secret" in volume for item in volume["secret"]["items"]}
    assert referenced | mounted <= secret_keys
    key_file = _kubernetes_environment()["ACR_REGISTRY_TOKEN_KEY_FILE"]["value"]
    (settings,) = [m for m in _container()["volumeMounts"] if m["name"] == "settings"]
    assert key_file == f"{settings['mountPath']}/token-signing-key.pem"
    assert _container()["args"] == ["--config", f"{settings['mountPath']}/desired.json"]


def test_ports_and_probes_match_the_code():
    ports = {port["name"]: port["containerPort"] for port in _container()["ports"]}
    assert ports == {"registry": REGISTRY_PORT, "metrics": METRICS_PORT}
    for probe in ("readinessProbe", "livenessProbe"):
        assert _container()[probe]["httpGet"] == {"path": "/healthz", "port": "registry"}
    assert 'add_get("/healthz"' in CODE
    (service,) = [d for d in _documents("kubernetes/registry.yaml") if d["kind"] == "Service"]
    assert service["spec"]["ports"][0]["targetPort"] == "registry"
    replica = _compose()["services"]["registry-1"]
    assert set(replica["expose"]) == {str(REGISTRY_PORT), str(METRICS_PORT)}
    nginx = (DEPLOY / "nginx.conf").read_text()
    upstreams = re.findall(r"server (registry-\d):(\d+)", nginx)
    assert upstreams == [(f"registry-{n}", str(REGISTRY_PORT)) for n in (1, 2, 3)]
    listen = re.search(r"listen (\d+);", nginx).group(1)
    assert _compose()["services"]["nginx"]["ports"] == [f"{listen}:{listen}"]


def _proxy_settings(config: str) -> set[str]:
    """The directives that shape how requests pass (everything but addresses, paths and logging)."""
    skip = ("listen", "server ", "pid", "error_log", "access_log", "log_format", "user", "daemon", "master_process",
            "worker_processes", "events", "http", "upstream", "location", "proxy_pass", "#", "}")
    lines = {line.strip() for line in config.splitlines()}
    return {line for line in lines if line and not line.startswith(skip) and not line.endswith("_temp_path")
            and "_temp_path " not in line}


def test_nginx_streams_both_ways_and_is_what_the_replica_tests_run():
    deployed = _proxy_settings((DEPLOY / "nginx.conf").read_text())
    tested = _proxy_settings(balancer_config(Path("/tmp/x"), 1, ["127.0.0.1:2"], Path("/tmp/x/access.log")))
    assert deployed == tested
    assert {"client_max_body_size 0;", "proxy_request_buffering off;", "proxy_buffering off;",
            "proxy_read_timeout 3600s;"} <= deployed


@pytest.mark.parametrize("text", [lambda: (DEPLOY / "desired.json").read_text(),
                                  lambda: _secret()["stringData"]["desired.json"]], ids=["compose", "kubernetes"])
def test_the_example_desired_properties_validate(text):
    assert validate_desired(json.loads(text())).name == "site-root"
