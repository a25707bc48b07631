"""What a client and an operator do with the real instances of tests/sync/hierarchy.py, through their APIs and
the command line: push (skopeo, plain HTTP), read manifests and the status document, run the operator's remote
commands, add tokens to a running instance, and activate a child as its engine would."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path

from connected_registry.child_settings import sync_token_actions
from connected_registry.storage import RegistryStore
from connected_registry.storage.gc import collect_garbage
from tests.support.http import basic, request
from tests.support.layouts import make_multiplatform_index, read_blob
from tests.support.oci import image_manifest, sha256
from tests.support.processes import run_cli, wait_until
from tests.sync.hierarchy import OPERATOR, READER, WRITER, sync_token_for, token

ACCEPT = {"Accept": "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"}
PROMPTLY = 5  # seconds for a small push to reach the parent while another repository's entry is going up

# Tokens some tests add to a running instance (`add_tokens`): (name, password, actions).
ONE_REPOSITORY_READER = ("app-reader1", "app-reader-password", ["repositories/factory/app/content/read",
                                                                "repositories/factory/app/metadata/read"])
# Another child's sync token as `get-settings --generate-password --repository 'factory/*'` makes it.
OTHER_CHILD_SYNC = ("line2-leaf-sync-token", "line2-leaf-sync-password",
                    sync_token_actions("line2-leaf", "ReadOnly", ["factory/*"]))

# Everything but the newlines the program writes itself: ESC, BEL, CR, backspace, CSI (C1), DEL.
CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


# --- content --------------------------------------------------------------------------------------------------


def skopeo_push(layout: Path, tag: str, instance, reference: str, *extra: str) -> None:
    result = subprocess.run(["skopeo", "copy", "--preserve-digests", "--dest-tls-verify=false", *extra,
                             "--dest-creds", f"{WRITER[0]}:{WRITER[1]}", f"oci:{layout}:{tag}",
                             f"docker://{instance.host}/{reference}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def manifest_at(instance, repository: str, reference: str):
    reply = request(f"{instance.url}/v2/{repository}/manifests/{reference}", headers={**basic(*READER), **ACCEPT})
    return reply if reply.status == 200 else None


def digest_at(instance, repository: str, reference: str) -> str | None:
    reply = manifest_at(instance, repository, reference)
    return reply.headers["Docker-Content-Digest"] if reply else None


def push_blob(instance, repository: str, data: bytes) -> str:
    digest = sha256(data)
    reply = request(f"{instance.url}/v2/{repository}/blobs/uploads/?digest={digest}", "POST", data, basic(*WRITER),
                    timeout=120)
    assert reply.status == 201, reply.body
    return digest


def put_manifest(instance, repository: str, reference: str, body: bytes) -> str:
    media_type = json.loads(body)["mediaType"]
    reply = request(f"{instance.url}/v2/{repository}/manifests/{reference}", "PUT", body,
                    {**basic(*WRITER), "Content-Type": media_type}, timeout=120)
    assert reply.status == 201, reply.body
    return sha256(body)


def push_small_image(instance, repository: str, tag: str) -> str:
    config, layer = json.dumps({"repository": repository, "tag": tag}).encode(), f"layer of {repository}".encode()
    for blob in (config, layer):
        push_blob(instance, repository, blob)
    return put_manifest(instance, repository, tag, image_manifest(config, [layer]))


def push_the_one_image(instance, repository: str) -> bytes:
    """The same one-layer image every time, pushed by digest (what a hostile index names over and over);
    returns its manifest."""
    config, layer = b'{"architecture":"amd64","os":"linux"}', b"the one layer"
    for blob in (config, layer):
        push_blob(instance, repository, blob)
    body = image_manifest(config, [layer])
    put_manifest(instance, repository, sha256(body), body)
    return body


def push_index_with_signature(instance, layout: Path) -> tuple[str, bytes, str]:
    """A two-platform index pushed with skopeo --all, and a signature attached to it through subject."""
    index_digest = make_multiplatform_index(layout, "multi")
    skopeo_push(layout, "multi", instance, "factory/multi:1.0", "--all")
    config, payload = b"{}", b"signature-bytes"
    for blob in (config, payload):
        reply = request(f"{instance.url}/v2/factory/multi/blobs/uploads/?digest={sha256(blob)}", "POST", blob,
                        basic(*WRITER))
        assert reply.status == 201
    index_body = read_blob(layout, index_digest)
    signature = json.loads(image_manifest(config, [payload], config_type="application/vnd.oci.empty.v1+json",
                                          artifact_type="application/vnd.example.signature"))
    signature["subject"] = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest,
                            "size": len(index_body)}
    signature_body = json.dumps(signature).encode()
    reply = request(f"{instance.url}/v2/factory/multi/manifests/{sha256(signature_body)}", "PUT", signature_body,
                    {**basic(*WRITER), "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert reply.status == 201
    return index_digest, index_body, sha256(signature_body)


def assert_index_with_signature_arrives(instance, layout: Path, index_digest: str, index_body: bytes,
                                        signature_digest: str) -> None:
    arrived = wait_until(lambda: manifest_at(instance, "factory/multi", "1.0"), timeout=40, what="the index")
    assert arrived.body == index_body
    for child in json.loads(index_body)["manifests"]:
        assert manifest_at(instance, "factory/multi", child["digest"]).body == read_blob(layout, child["digest"])

    def signature_listed():
        reply = request(f"{instance.url}/v2/factory/multi/referrers/{index_digest}", headers=basic(*READER))
        return reply.status == 200 and [m["digest"] for m in reply.json()["manifests"]] == [signature_digest]

    wait_until(signature_listed, timeout=40, what="the signature")


# --- status and operation -------------------------------------------------------------------------------------


def status_of(instance) -> dict:
    return request(f"{instance.url}/acr/connected/v1/status", headers=basic(*READER)).json()


def codes(document: dict) -> set[str]:
    return {detail["code"] for detail in document["statusDetails"]}


def operator_cli(instance, *arguments: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """A remote command against `instance` with its operator token (gateway rights on its own name)."""
    return run_cli(*arguments, "--registry", instance.url, "--username", OPERATOR[0], "--password", OPERATOR[1],
                   env=env)


def outbox(instance, *arguments: str) -> subprocess.CompletedProcess:
    return operator_cli(instance, "outbox", *arguments)


def add_tokens(instance, *tokens: tuple[str, str, list[str]]) -> None:
    """Add tokens to a running instance's configuration, and wait until it applied them."""
    for name, password, actions in tokens:
        instance.document["tokens"][name] = token(password, actions)
    instance.write_config()

    def known(name: str, password: str) -> bool:
        return request(f"{instance.url}/acr/oauth2/token", headers=basic(name, password)).status == 200

    for name, password, _ in tokens:
        wait_until(lambda: known(name, password), what=f"{instance.name} to apply token {name}")  # noqa: B023


def activate(instance, child: str, instance_id: str) -> None:
    """What a child's engine sends at activation, with the child's sync token."""
    name, password, _ = sync_token_for(child)
    document = {"instanceId": instance_id, "deviceId": "edge-1", "mode": "ReadOnly", "version": "1",
                "messageTtl": "P2D", "repositories": ["factory/*"]}
    reply = request(f"{instance.url}/acr/connected/v1/registries/{child}/activate", "POST",
                    json.dumps(document).encode(), {**basic(name, password), "Content-Type": "application/json"})
    assert reply.status == 200, reply.body


def lose_image_at(data_dir: Path, repository: str, digest: str) -> None:
    """Content lost at a stopped instance (a repaired or restored volume): the manifest and its tags removed from its
    data volume without telling anyone (no outbox entry), and its blobs collected."""

    async def lose() -> None:
        async with RegistryStore(str(data_dir)) as store:
            await store.delete_manifest(repository, digest, from_parent=True)
            await collect_garbage(store, grace=0)

    asyncio.run(lose())
