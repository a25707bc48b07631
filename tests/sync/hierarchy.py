"""Hierarchies of real instances on loopback ports, configured with tokens as an operator would."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from connected_registry.auth.passwords import hash_password
from tests.support.azurite import BLOB_STORE_VARIABLE
from tests.support.cluster import ClusteredStores
from tests.support.postgres import METADATA_DSN_VARIABLE
from tests.support.processes import RegistryProcess

WRITER = ("writer1", "writer-password")
OPERATOR = ("operator1", "operator-password")
READER = ("reader1", "reader-password")

_HASHES: dict[str, str] = {}

# A test module's `pytestmark = BOTH_TOP_TIERS` runs each test twice (the `top_tier` fixture, tests/conftest.py):
# "embedded", every instance on SQLite and files, and "clustered", the top tier of its hierarchy as a scale-out
# replica runs: each root (and each instance started with `clustered=True`) on a PostgreSQL database and an Azurite
# container of its own, the instances below on the embedded stores; so also the roots inprocess.py starts.
BOTH_TOP_TIERS = pytest.mark.parametrize("top_tier", ["embedded", "clustered"], indirect=True)
EMBEDDED_STORES: dict[str, str | None] = {METADATA_DSN_VARIABLE: None, BLOB_STORE_VARIABLE: None}
# The clustered case's stores, set by the `top_tier` fixture for its test; None: each instance as the environment says.
clustered_stores: ClusteredStores | None = None


def token(password: str, actions: list[str]) -> dict:
    if password not in _HASHES:  # scrypt is slow on purpose; reuse within a test run
        _HASHES[password] = hash_password(password)
    return {"passwordHashes": [_HASHES[password]], "actions": actions}


def client_tokens() -> dict:
    return {
        WRITER[0]: token(WRITER[1], [f"repositories/*/{a}" for a in
                                     ("content/read", "content/write", "content/delete", "metadata/read")]),
        READER[0]: token(READER[1], ["repositories/*/content/read", "repositories/*/metadata/read"]),
    }


def sync_token_for(child: str, mode: str = "ReadOnly") -> tuple[str, str, dict]:
    """The token a parent keeps for a child: its gateway actions and the repository actions its mode needs."""
    name, password = f"{child}-sync", f"{child}-sync-password"
    actions = [f"gateway/{child}/{a}" for a in ("config/read", "config/write", "message/read", "message/write")]
    repository_actions = ["content/read", "metadata/read"]
    if mode == "ReadWrite":
        repository_actions += ["content/write", "content/delete", "metadata/write"]
    actions += [f"repositories/*/{a}" for a in repository_actions]
    return name, password, token(password, actions)


@dataclass
class Instance:
    """A running `serve` process and the desired properties it reads from its --config file."""

    name: str
    process: RegistryProcess
    config_path: Path
    document: dict

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def host(self) -> str:
        return self.process.host

    @property
    def metrics_url(self) -> str:
        return self.process.metrics_url

    @property
    def pid(self) -> int:
        return self.process.pid

    def write_config(self, document: dict | None = None) -> None:
        """Give the running instance a new configuration (by default its `document`, changed in place). Written
        whole, then moved into place, so the instance never reads half of it."""
        self.document = self.document if document is None else document
        temporary = self.config_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.document))
        temporary.replace(self.config_path)

    def stop(self) -> None:
        self.process.stop()


def tier_environment(parent, clustered: bool | None) -> dict[str, str | None]:
    """What puts an instance on its tier's stores in a test's clustered case: stores of its own where `clustered`
    says (by default, where it is a root), the embedded ones elsewhere. Outside that case, nothing."""
    if clustered_stores is None:
        return {}
    on_its_own = parent is None if clustered is None else clustered
    return clustered_stores.environment() if on_its_own else dict(EMBEDDED_STORES)


def start_instance(base: Path, name: str, *, parent=None, mode: str = "ReadOnly",
                   repositories: list[str] | None = None, children: list[tuple[str, str]] = (),
                   extra: dict | None = None, directory_name: str | None = None,
                   sync_password: str | None = None, parent_settings: dict | None = None,
                   port: int | None = None, env: dict[str, str | None] | None = None, clustered: bool | None = None,
                   **process) -> Instance:
    """An instance named `name`. `parent`: an Instance (its tokens must include this one's sync token, see
    `children`) or any registry with `url` and `host` (a plain parent). `sync_password` replaces the sync token's
    password in the connection string (e.g. a wrong one); `parent_settings` adds to the `parent` section. `port`:
    where it listens (default: a free one); `env` adds to its environment, over its tier's stores
    (`tier_environment`, which `clustered` steers); `process` goes to RegistryProcess (`wait`, `command`, `metrics`,
    `log_path`: how the benchmarks run it)."""
    directory = base / (directory_name or name)
    directory.mkdir(parents=True, exist_ok=True)
    tokens = client_tokens()
    tokens[OPERATOR[0]] = token(OPERATOR[1], [f"gateway/{name}/config/read", f"gateway/{name}/config/write",
                                              "repositories/*/metadata/read"])
    for child, child_mode in children:
        sync_name, _, sync_entry = sync_token_for(child, child_mode)
        tokens[sync_name] = sync_entry
    document: dict = {"name": name, "mode": mode, "tokens": tokens, "repositories": repositories or ["*"]}
    env = {**tier_environment(parent, clustered), **(env or {})}
    if parent is not None:
        sync_name, right_password, _ = sync_token_for(name, mode)
        sync_password = right_password if sync_password is None else sync_password
        document["parent"] = {"endpoint": parent.url, "syncToken": {"name": sync_name}, **(parent_settings or {})}
        env["ACR_REGISTRY_CONNECTION_STRING"] = (f"ConnectedRegistryName={name};SyncTokenName={sync_name};"
                                                 f"SyncTokenPassword={sync_password};ParentGatewayEndpoint={parent.host};"
                                                 "ParentEndpointProtocol=http")
    document.update(extra or {})
    config_path = directory / "desired.json"
    config_path.write_text(json.dumps(document))
    process = RegistryProcess(directory / "data", port=port, extra_args=["--config", str(config_path)], env=env,
                              **process)
    return Instance(name, process, config_path, document)
