"""A plain parent with token auth: CNCF distribution 2.8 with `auth.token` (SPEC 2: "CNCF distribution (with and
without token auth) as the top"; SPEC 3 and 7: the sync token answers the parent's Bearer challenge)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.clients import TokenAuthDistribution, skopeo
from tests.support.http import basic, bearer, request
from tests.support.layouts import make_image, read_blob
from tests.support.oci import OCI_MANIFEST
from tests.support.processes import wait_until
from tests.support.tokenserver import TokenServer, TokenUser
from tests.sync.hierarchy import READER, start_instance, sync_token_for
from tests.sync.instance_api import codes, manifest_at, skopeo_push, status_of

ADMIN = ("registry-admin", "registry-admin-password")
CATALOG = {"registry:catalog": ["*"]}  # patterns like factory/* need the parent's _catalog (SPEC 7.2)


@pytest.fixture
def token_server(tmp_path: Path):
    server = TokenServer(tmp_path / "tokens", {ADMIN[0]: TokenUser(ADMIN[1], {"repository:*": ["*"], **CATALOG})})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def distribution(tmp_path: Path, token_server):
    registry = TokenAuthDistribution(tmp_path / "distribution", token_server)
    try:
        yield registry
    finally:
        registry.stop()


def allow_sync_token(server: TokenServer, child: str, mode: str, actions: list[str]) -> tuple[str, str]:
    """Register the child's sync token (name and right password, as hierarchy.py gives them) at the token server."""
    name, password, _ = sync_token_for(child, mode)
    server.users[name] = TokenUser(password, {"repository:factory/*": actions, **CATALOG})
    return name, password


def push_to_distribution(layout: Path, tag: str, distribution, reference: str) -> None:
    skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", f"{ADMIN[0]}:{ADMIN[1]}",
           f"oci:{layout}:{tag}", f"docker://{distribution.host}/{reference}")


def manifest_at_distribution(server: TokenServer, distribution, repository: str, reference: str):
    """GET the manifest with a token minted directly (not through the recorded HTTP endpoint)."""
    token = server.mint(ADMIN[0], [{"type": "repository", "name": repository, "actions": ["pull"]}])
    return request(f"{distribution.url}/v2/{repository}/manifests/{reference}",
                   headers={**bearer(token), "Accept": OCI_MANIFEST})


def test_a_read_write_child_syncs_down_and_up_through_the_token_server(tmp_path: Path, token_server, distribution):
    sync_name, _ = allow_sync_token(token_server, "plant-writer", "ReadWrite", ["pull", "push"])
    layout = tmp_path / "layout"
    digest = make_image(layout, "v1")
    body = read_blob(layout, digest)
    push_to_distribution(layout, "v1", distribution, "factory/app:v1")
    # distribution really asks for a token: without one the content is not there to take
    anonymous = request(f"{distribution.url}/v2/factory/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert anonymous.status == 401
    assert f'Bearer realm="{token_server.realm}"' in anonymous.headers["WWW-Authenticate"]

    child = start_instance(tmp_path, "plant-writer", parent=distribution, mode="ReadWrite", repositories=["factory/*"])
    try:
        arrived = wait_until(lambda: manifest_at(child, "factory/app", "v1"), timeout=30,
                             what="the image from distribution at the child")
        assert arrived.body == body
        assert arrived.headers["Docker-Content-Digest"] == digest

        local = make_image(layout, "local")
        local_body = read_blob(layout, local)
        skopeo_push(layout, "local", child, "factory/app:local")
        upstream = wait_until(lambda: (lambda r: r if r.status == 200 else None)(
            manifest_at_distribution(token_server, distribution, "factory/app", "local")),
            timeout=30, what="the child's push at distribution")
        assert upstream.body == local_body
        assert upstream.headers["Docker-Content-Digest"] == local

        # the same blobs into another repository: a cross-repository mount, one token for both scopes
        skopeo_push(layout, "local", child, "factory/copy:local")
        wait_until(lambda: manifest_at_distribution(token_server, distribution, "factory/copy", "local").status == 200,
                   timeout=30, what="the second repository at distribution")

        seen = token_server.requests_by(sync_name)
        assert seen, f"the token server never saw {sync_name}: {token_server.requests}"
        assert {r.auth for r in seen} == {"Basic"}
        assert all(r.status == 200 and r.service == token_server.service for r in seen), seen
        pulls = [r for r in seen if "repository:factory/app:pull" in r.scopes]
        pushes = [r for r in seen if "repository:factory/app:pull,push" in r.scopes]
        assert pulls and pushes, [r.scopes for r in seen]
        assert {"type": "repository", "name": "factory/app", "actions": ["pull"]} in pulls[0].granted
        assert {"type": "repository", "name": "factory/app", "actions": ["pull", "push"]} in pushes[0].granted
        mount_scopes = {"repository:factory/copy:pull,push", "repository:factory/app:pull"}
        mounts = [r for r in seen if set(r.scopes) == mount_scopes]
        assert mounts, [r.scopes for r in seen]
        assert {"type": "repository", "name": "factory/app", "actions": ["pull"]} in mounts[0].granted
        # cached per scope: one token request per scope, not one per registry request
        assert sum(r.scopes == ["repository:factory/app:pull"] for r in seen) == 1, [r.scopes for r in seen]
        assert "PARENT_AUTH_FAILED" not in codes(status_of(child))
    finally:
        child.stop()


def test_a_wrong_sync_token_password_reports_parent_auth_failed_and_syncs_nothing(tmp_path: Path, token_server,
                                                                                    distribution):
    sync_name, right_password = allow_sync_token(token_server, "plant-badpass", "ReadWrite", ["pull", "push"])
    layout = tmp_path / "layout"
    make_image(layout, "v1")
    push_to_distribution(layout, "v1", distribution, "factory/app:v1")

    child = start_instance(tmp_path, "plant-badpass", parent=distribution, mode="ReadWrite",
                           repositories=["factory/*"], sync_password=right_password + "-wrong")
    try:
        status = wait_until(lambda: (lambda s: s if "PARENT_AUTH_FAILED" in codes(s) else None)(status_of(child)),
                            timeout=30, what="PARENT_AUTH_FAILED in the child's status")
        detail = next(d for d in status["statusDetails"] if d["code"] == "PARENT_AUTH_FAILED")
        assert detail["severity"] == "Error"
        assert sync_name in detail["description"]

        seen = token_server.requests_by(sync_name)
        assert seen and {r.auth for r in seen} == {"Basic"}
        assert {r.status for r in seen} == {401}, seen  # never a token with the wrong password
        assert manifest_at(child, "factory/app", "v1") is None
        catalog = request(f"{child.url}/v2/_catalog", headers=basic(*READER))
        assert catalog.status == 200 and catalog.json()["repositories"] == [], catalog.body
    finally:
        child.stop()
