"""No content crosses a repository scope at the boundary between two layers (issue 14, finding 1; SPEC 8).

A blob becomes part of repository R at a child only when the parent says it is in R (it answers for R's blob with
the sync token), a manifest of R here references it, or a client put it in R with the rights to. A client of demo/app
only must not read a layer of demo/secret through demo/app, whether the child holds it for demo/secret already or is
fetching it for demo/secret right now; and the outbox never makes the parent take into R what was not in R here.
"""

from __future__ import annotations

import http.client
import os
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.cache.layers import NO_SYNC_DURING_THE_TEST
from tests.support.http import Reply, basic, request
from tests.support.oci import sha256
from tests.support.processes import wait_until
from tests.sync.boundary import (APP, APP_ACTIONS, APP_CLIENT, SECRET, HoldingLink, blob_status, child_tokens,
                                 push_image)
from tests.sync.hierarchy import BOTH_TOP_TIERS, OPERATOR, READER, WRITER, start_instance, sync_token_for, token

pytestmark = BOTH_TOP_TIERS  # the parent's side on the embedded stores and as a scale-out replica

MiB = 1 << 20
ATTACKS = {"GET": {}, "Range": {"Range": "bytes=0-1023"}}


def start_child(base: Path, parent, mode: str = "ReadOnly", cold: bool = True, **parent_settings):
    """line1-child of `parent` for demo/*, with the client of demo/app; `cold`: it never syncs during the test."""
    return start_instance(base, "line1-child", parent=parent, mode=mode, repositories=["demo/*"],
                          extra={"tokens": child_tokens("line1-child")},
                          parent_settings={**(NO_SYNC_DURING_THE_TEST if cold else {}), **parent_settings})


def attempt(url: str, headers: dict) -> Reply:
    """A GET's status, headers and (of a success) its first KiB: a body that streams from a held transfer is not
    waited for."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    try:
        connection.request("GET", parts.path, headers=headers)
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read() if response.status >= 400 else
                     response.read(1024))
    finally:
        connection.close()


def assert_refused(reply: Reply) -> None:
    assert reply.status == 404 and reply.error_code == "BLOB_UNKNOWN", (reply.status, reply.body[:200])


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_layer_held_for_another_repository_is_not_served_through_this_one(tmp_path: Path, attack):
    root = start_instance(tmp_path, "factory-root", children=[("line1-child", "ReadOnly")])
    child = start_child(tmp_path, root)
    try:
        secret = push_image(root, SECRET, "v1", [os.urandom(MiB)])
        layer = sha256(secret.layers[0])
        # A reader of everything pulls the secret image at the child: the layer is held there, for demo/secret.
        assert request(f"{child.url}/v2/{SECRET}/manifests/v1", headers=basic(*READER)).status == 200
        assert request(f"{child.url}/v2/{SECRET}/blobs/{layer}", headers=basic(*READER)).body == secret.layers[0]
        wait_until(lambda: blob_status(child, SECRET, layer, READER) == 200, what="the layer stored at the child")

        assert_refused(attempt(f"{child.url}/v2/{APP}/blobs/{layer}", {**basic(*APP_CLIENT), **ATTACKS[attack]}))
        # Nor did the attempt make it part of demo/app, for anybody.
        assert blob_status(child, APP, layer, READER) == 404
        assert blob_status(child, APP, layer, APP_CLIENT) == 404
        assert blob_status(child, SECRET, layer, APP_CLIENT) == 403
    finally:
        child.stop()
        root.stop()


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_transfer_in_progress_for_another_repository_is_joined_only_where_the_parent_has_the_blob(
        tmp_path: Path, attack):
    """Transfers are one per digest: one started for demo/secret is joined from demo/other (whose parent holds
    the same layer) and shares its single transfer, but not from demo/app."""
    root = start_instance(tmp_path, "factory-root", children=[("line1-child", "ReadOnly")])
    link = HoldingLink(root)
    child = start_child(tmp_path, link, firstByteTimeout="PT60S")
    pulls: dict[str, bytes] = {}
    threads: list[threading.Thread] = []

    def pull(repository: str) -> None:
        pulls[repository] = request(f"{child.url}/v2/{repository}/blobs/{layer}", headers=basic(*READER),
                                    timeout=60).body

    try:
        secret = push_image(root, SECRET, "v1", [os.urandom(2 * MiB)])
        layer = sha256(secret.layers[0])
        push_image(root, "demo/other", "v1", secret.layers)
        link.held.add(layer)
        threads.append(threading.Thread(target=pull, args=(SECRET,)))
        threads[0].start()
        wait_until(lambda: request(f"{child.url}/acr/connected/v1/status", headers=basic(*OPERATOR)).json()
                   ["cache"]["transfersInProgress"] == 1 and link.transfers[layer] == 1, what="the held transfer")

        assert_refused(attempt(f"{child.url}/v2/{APP}/blobs/{layer}", {**basic(*APP_CLIENT), **ATTACKS[attack]}))

        threads.append(threading.Thread(target=pull, args=("demo/other",)))  # joins: the parent has it there
        threads[1].start()
        link.release()
        for thread in threads:
            thread.join(timeout=60)
        assert pulls == {SECRET: secret.layers[0], "demo/other": secret.layers[0]}
        assert link.transfers[layer] == 1
        wait_until(lambda: blob_status(child, "demo/other", layer, READER) == 200, what="the layer in demo/other")
        assert blob_status(child, APP, layer, READER) == 404
    finally:
        link.release()
        child.stop()
        root.stop()  # before the link: its long polls through the link end with it
        link.stop()


def test_the_outbox_never_makes_the_parent_mount_a_blob_into_a_repository_that_lost_it_here(tmp_path: Path):
    """A ReadWrite child holds the layer in demo/secret (synced) and, for a while, in demo/app (pushed there with
    a manifest). The manifest's upload is refused (no write right yet) and parked; then the layer is deleted from
    demo/app here. Retried, the upload must not ask the parent to mount the layer into demo/app from demo/secret."""
    sync_name, sync_password, _ = sync_token_for("line1-child", "ReadWrite")
    read_only = [f"gateway/line1-child/{a}" for a in ("config/read", "config/write", "message/read", "message/write")
                 ] + ["repositories/*/content/read", "repositories/*/metadata/read"]
    root = start_instance(tmp_path, "factory-root")
    root.document["tokens"][sync_name] = token(sync_password, read_only)
    root.write_config()
    child = start_child(tmp_path, root, mode="ReadWrite", cold=False)
    operator = basic(*OPERATOR)

    def entries() -> list[dict]:
        return request(f"{child.url}/acr/connected/v1/outbox", headers=operator).json()["entries"]

    try:
        secret = push_image(root, SECRET, "v1", [os.urandom(256 << 10)])
        layer = sha256(secret.layers[0])
        wait_until(lambda: blob_status(child, SECRET, layer, READER) == 200, timeout=40, what="demo/secret synced")

        push_image(child, APP, "v1", secret.layers, credentials=APP_CLIENT)
        parked = wait_until(lambda: [e for e in entries() if e["state"] == "parked"], timeout=40, what="parked")
        assert request(f"{child.url}/v2/{APP}/blobs/{layer}", "DELETE", headers=basic(*APP_CLIENT)).status == 202

        root.document["tokens"][sync_name] = token(sync_password, read_only + [f"repositories/{APP}/content/write"])
        root.write_config()
        wait_until(lambda: "push" in request(f"{root.url}/acr/oauth2/token?service=factory-root&scope=repository:"
                                             f"{APP}:push", headers=basic(sync_name, sync_password)).json()["scope"],
                   what="the root to apply the write right")
        assert request(f"{child.url}/acr/connected/v1/outbox/{parked[0]['id']}/retry", "POST",
                       headers=operator).status == 200
        again = wait_until(lambda: [e for e in entries() if e["attempts"] == 2] or entries() == [], timeout=40,
                           what="the retried entry to end")

        assert blob_status(root, APP, layer, READER) == 404
        assert again != [] and layer in again[0]["lastError"], again
    finally:
        child.stop()
        root.stop()


def test_a_mount_without_from_links_only_from_repositories_the_caller_may_read(tmp_path: Path):
    """OCI 1.1: `mount` without `from` is 201 when a repository the caller may read holds the blob, else an
    upload session (202) as a failed mount always is."""
    tokens = child_tokens("factory-root", APP_ACTIONS + ["repositories/demo/shared/content/read"])
    root = start_instance(tmp_path, "factory-root", extra={"tokens": tokens})
    try:
        shared = push_image(root, "demo/shared", "v1", [os.urandom(4096)]).layers[0]
        secret = push_image(root, SECRET, "v1", [os.urandom(4096)]).layers[0]
        app_client = basic(*APP_CLIENT)

        reply = request(f"{root.url}/v2/{APP}/blobs/uploads/?mount={sha256(shared)}", "POST", headers=app_client)
        assert reply.status == 201, reply.body
        assert reply.headers["Docker-Content-Digest"] == sha256(shared)
        assert request(f"{root.url}/v2/{APP}/blobs/{sha256(shared)}", headers=app_client).body == shared

        reply = request(f"{root.url}/v2/{APP}/blobs/uploads/?mount={sha256(secret)}", "POST", headers=app_client)
        assert reply.status == 202 and reply.headers["Docker-Upload-UUID"], reply.body
        assert blob_status(root, APP, sha256(secret), WRITER) == 404
    finally:
        root.stop()
