"""Azurite, Microsoft's Azure Storage emulator (the npm package `azurite`), as the tests' Azure Blob Storage.

Installed once into a cache folder (`AZURITE_CACHE`, default ~/.cache/connected-registry-azurite; scripts/setup.sh
--test installs it there too), then `azurite-blob` runs on a free loopback port with its data in a temporary folder,
and is stopped by PID. Every test gets a container of its own, so one Azurite serves the whole session.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from tests.support.processes import ManagedProcess, free_port, port_open, wait_until

CACHE = Path(os.environ.get("AZURITE_CACHE", Path.home() / ".cache" / "connected-registry-azurite"))
ACCOUNT = "devstoreaccount1"
BLOB_STORE_VARIABLE = "ACR_REGISTRY_BLOB_STORE"  # `serve --blob-store`'s default
# Azurite's well-known development account key (public, documented by Microsoft; it opens nothing but the emulator).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# A test module's `pytestmark = BOTH_BLOB_STORES` runs its tests against the filesystem store and against Azurite
# (the `blob_store` fixture of tests/conftest.py, which the `api` and `registry` fixtures use).
BOTH_BLOB_STORES = pytest.mark.parametrize("blob_store", ["filesystem", "azure"], indirect=True)
# The registry core on the stores an instance can have: the embedded default, PostgreSQL beside files, and the
# scale-out pair (PostgreSQL and Azure Blob Storage); SQLite beside Azure is BOTH_BLOB_STORES's second case.
STORE_PAIRS = pytest.mark.parametrize(("metadata_backend", "blob_store"), [
    ("sqlite", "filesystem"), ("postgresql", "filesystem"), ("postgresql", "azure")], indirect=True)


def azurite_blob_command() -> Path:
    """The `azurite-blob` launcher, installed with npm into the cache folder when it is not there yet."""
    launcher = CACHE / "node_modules" / ".bin" / "azurite-blob"
    if not launcher.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(CACHE), "azurite@3"],
                       check=True, timeout=600)
    return launcher


class Azurite(ManagedProcess):
    def __init__(self, location: Path) -> None:
        self.port = free_port()
        location.mkdir(parents=True, exist_ok=True)
        super().__init__([azurite_blob_command(), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                          "--location", location, "--skipApiVersionCheck", "--loose", "--silent"])
        wait_until(lambda: port_open(self.port) or self._exited(), timeout=60, what=f"azurite on port {self.port}")

    def _exited(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"azurite exited with {self.process.returncode}:\n{self.log()}")
        return False

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self.endpoint};")

    def environment(self) -> dict[str, str]:
        """What a registry needs to reach it (the credentials of `serve --blob-store azure://...`)."""
        return {"ACR_REGISTRY_BLOB_CONNECTION_STRING": self.connection_string}

    @staticmethod
    def new_store() -> str:
        """A blob store of its own (a new container, a prefix) for one test."""
        return f"azure://test-{uuid.uuid4().hex[:16]}/registry"

    def _container(self, store: str):
        """The container client of a store (`azure://<container>/<prefix>`, as `new_store` gives) and its prefix."""
        container, _, prefix = store.removeprefix("azure://").partition("/")
        service = BlobServiceClient.from_connection_string(self.connection_string)
        return service.get_container_client(container), f"{prefix.strip('/')}/" if prefix.strip("/") else ""

    def blob_names(self, store: str) -> set[str]:
        """The names under a store's prefix, without it (`blobs/sha256/<hex>`, ...), read from Azurite itself: what
        a registry on that store really put there."""
        client, prefix = self._container(store)
        with client:
            return {item.name.removeprefix(prefix) for item in client.list_blobs(name_starts_with=prefix or None)}

    def overwrite(self, store: str, name: str, data: bytes) -> None:
        """Replace the bytes of `name` (under the store's prefix) behind the registry's back, as a fault would."""
        client, prefix = self._container(store)
        with client:
            client.upload_blob(f"{prefix}{name}", data, overwrite=True)
