"""What the bundle tests do with real instances (tests/sync/hierarchy.py) and the real command line: a root with a
networked child, and the paths of a child that never had a link; images pushed, bundles exported, inventories
taken, imports run; the state and the events of an instance, to compare one with another."""

from __future__ import annotations

import contextlib
from contextlib import closing
import json
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from connected_registry.storage import RegistryStore
from tests.support.http import basic, request
from tests.support.oci import image_manifest
from tests.support.processes import free_port, run_cli
from tests.sync.hierarchy import READER, WRITER, start_instance
from tests.sync.instance_api import digest_at, push_blob, put_manifest

SCOPE = ["factory/*"]


def layer_of(repository: str, size: int) -> bytes:
    """The same bytes for a repository every time: a second tag of it shares its layer."""
    return random.Random(f"{repository}:{size}").randbytes(size)


def push_image(instance, repository: str, tag: str, layer_size: int = 4096) -> str:
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    layer = layer_of(repository, layer_size)
    for blob in (config, layer):
        push_blob(instance, repository, blob)
    return put_manifest(instance, repository, tag, image_manifest(config, [layer]))


def delete_tag(instance, repository: str, tag: str) -> None:
    reply = request(f"{instance.url}/v2/{repository}/manifests/{tag}", "DELETE", None, basic(*WRITER))
    assert reply.status == 202, reply.body


def cli(*arguments: str, expect: int = 0):
    result = run_cli(*arguments, timeout=300)
    assert result.returncode == expect, f"{arguments}: {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def export_from(instance, output: Path, *extra: str):
    """A bundle of the scope from a running instance, with the reader's token; its carried bytes counted."""
    result = cli("export", "--registry", instance.url, "--username", READER[0], "--password", READER[1],
                 "--repository", SCOPE[0], "--output", str(output), *extra)
    with tarfile.open(output) as archive:
        carried = sum(member.size for member in archive.getmembers() if member.name.startswith("blobs/"))
    return SimpleNamespace(bytes=carried, stdout=result.stdout)


def inventory_of(output: Path, *extra: str) -> dict:
    cli("inventory", "--output", str(output), *extra)
    return json.loads(output.read_text())


def import_into(bundle: Path, *extra: str, expect: int = 0):
    return cli("import", str(bundle), *extra, expect=expect)


def state_of(instance) -> dict:
    """{repository: {tag: digest}} of what a client with the reader's token sees."""
    catalog = request(f"{instance.url}/v2/_catalog", headers=basic(*READER)).json()["repositories"]
    state = {}
    for repository in catalog:
        tags = request(f"{instance.url}/v2/{repository}/tags/list", headers=basic(*READER)).json().get("tags") or []
        if tags:
            state[repository] = {tag: digest_at(instance, repository, tag) for tag in tags}
    return state


def state_in(data_dir: Path) -> dict:
    """The same, read from a stopped instance's data directory."""
    with closing(RegistryStore(str(data_dir))) as store:
        return {repository: {tag: store.get_manifest(repository, tag).digest
                             for tag in store.list_tags(repository, None, None)}
                for repository in store.list_repositories(None, None) if store.list_tags(repository, None, None)}


def manifests_in(data_dir: Path, repository: str) -> set[str]:
    with closing(RegistryStore(str(data_dir))) as store:
        return set(store.manifest_digests(repository))


def events_of(data_dir: Path) -> list[tuple]:
    """The changes an instance applied, as its event log has them (type, repository, tag, digest), in order."""
    with closing(RegistryStore(str(data_dir))) as store:
        return [(event["type"], event["repository"], event.get("tag"), event["digest"])
                for event in store.events(0, 10000)]


def control_state(data_dir: Path):
    with closing(RegistryStore(str(data_dir))) as store:
        return store.control.state()


@dataclass
class BundleSite:
    """A root, a child synced over the network, and a child with no link (its parent's address answers nothing)."""

    base: Path
    root: object
    online: object
    root_key: Path
    offline_name: str = "bundle-offline"
    started: list = field(default_factory=list)

    @property
    def unreachable_parent(self):
        port = free_port()
        return SimpleNamespace(url=f"http://127.0.0.1:{port}", host=f"127.0.0.1:{port}")

    @property
    def offline_data(self) -> Path:
        return self.base / self.offline_name / "data"

    @property
    def offline_config(self) -> Path:
        """The desired properties of the child with no link, as start_instance writes them."""
        path = self.base / f"{self.offline_name}.json"
        if not path.exists():
            parent = self.unreachable_parent
            path.write_text(json.dumps({"name": self.offline_name, "mode": "ReadOnly", "repositories": SCOPE,
                                        "parent": {"endpoint": parent.url}}))
        return path

    def start_offline(self):
        instance = start_instance(self.base, self.offline_name, parent=self.unreachable_parent, repositories=SCOPE)
        self.started.append(instance)
        return instance

    def fresh_data(self, name: str) -> Path:
        return self.base / "fresh" / name


@contextlib.contextmanager
def bundle_site(base: Path):
    root = start_instance(base, "bundle-root", mode="ReadWrite",
                          children=[("bundle-online", "ReadOnly"), ("bundle-linked", "ReadWrite")])
    started = [root]
    try:
        online = start_instance(base, "bundle-online", parent=root, repositories=SCOPE)
        started.append(online)
        root_key = base / "root.pem"
        root_key.write_text(request(f"{root.url}/acr/connected/v1/info").json()["bundleKey"])
        site = BundleSite(base, root, online, root_key, started=started)
        yield site
    finally:
        for instance in started:
            instance.stop()
