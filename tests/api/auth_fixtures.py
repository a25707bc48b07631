"""A registry process configured with tokens, for the authentication tests."""

from __future__ import annotations

import json
from pathlib import Path

from connected_registry.auth.passwords import hash_password
from tests.support.processes import RegistryProcess
from tests.sync.hierarchy import Instance

PASSWORDS = {
    "writer1": "writer-password",
    "reader1": "reader-password",
    "disabled1": "disabled-password",
    "rotated1": "new-password",
    "catalog1": "catalog-password",
}


def token_entry(passwords: list[str], actions: list[str], status: str = "enabled") -> dict:
    return {"passwordHashes": [hash_password(p) for p in passwords], "actions": actions, "status": status}


def standard_tokens() -> dict:
    return {
        "writer1": token_entry([PASSWORDS["writer1"]], [
            "repositories/factory/*/content/read", "repositories/factory/*/content/write",
            "repositories/factory/*/content/delete", "repositories/factory/*/metadata/read"]),
        "reader1": token_entry([PASSWORDS["reader1"]], [
            "repositories/factory/app/content/read", "repositories/factory/app/metadata/read"]),
        "disabled1": token_entry([PASSWORDS["disabled1"]], ["repositories/*/content/read"], status="disabled"),
        "rotated1": token_entry(["old-password", PASSWORDS["rotated1"]], [
            "repositories/factory/app/content/read", "repositories/factory/app/metadata/read"]),
        "catalog1": token_entry([PASSWORDS["catalog1"]], [
            "repositories/factory/app/metadata/read", "repositories/factory/app/content/read",
            "repositories/other/metadata/read"]),
    }


def start_secured(tmp_path: Path, document: dict | None = None, env: dict | None = None) -> Instance:
    config_path = tmp_path / "desired.json"
    document = document if document is not None else {"name": "factory-root", "tokens": standard_tokens()}
    config_path.write_text(json.dumps(document))
    process = RegistryProcess(tmp_path / "data", extra_args=["--config", str(config_path)], env=env)
    return Instance(document.get("name", ""), process, config_path, document)
