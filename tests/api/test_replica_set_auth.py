"""Tokens through three replicas behind nginx: a JWT one replica issued is honoured by the others (they sign with
one key, the PEM `ACR_REGISTRY_TOKEN_KEY_FILE` names: in deploy/, a Secret every replica mounts), and the realm of
the challenge names the balancer, so skopeo, docker login (its refresh token) and ctr work whichever replica each
request lands on."""

from __future__ import annotations

import base64
import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.api.auth_fixtures import PASSWORDS, standard_tokens
from tests.api.test_real_clients_auth import docker_login
from tests.support.clients import rootfs_tar, skopeo
from tests.support.cluster import ReplicaSet
from tests.support.layouts import make_image, manifest_digest

WRITER = ("writer1", PASSWORDS["writer1"])
READER = ("reader1", PASSWORDS["reader1"])


@pytest.fixture(scope="module")
def secured_set(tmp_path_factory, postgres, azurite):
    workdir = tmp_path_factory.mktemp("secured-replicas")
    config = workdir / "desired.json"
    config.write_text(json.dumps({"name": "factory-root", "tokens": standard_tokens()}))
    cluster = ReplicaSet(workdir, postgres.new_database(), azurite.new_store(), azurite.environment(),
                         extra_args=["--config", str(config)],
                         env={"ACR_REGISTRY_TOKEN_KEY_FILE": str(workdir / "shared" / "token-signing-key.pem")})
    try:
        yield cluster
    finally:
        cluster.stop()


def test_the_challenge_names_the_balancer_and_a_token_from_one_replica_opens_every_other(secured_set):
    try:
        urllib.request.urlopen(f"{secured_set.url}/v2/factory/app/tags/list", timeout=10)
        raise AssertionError("an anonymous read was let through")
    except urllib.error.HTTPError as challenge:
        assert challenge.code == 401
        realm = re.search(r'realm="([^"]+)"', challenge.headers["WWW-Authenticate"]).group(1)
    assert realm == f"{secured_set.url}/acr/oauth2/token"
    basic = "Basic " + base64.b64encode(":".join(WRITER).encode()).decode()
    asked = urllib.request.Request(f"{realm}?service=factory-root&scope=repository:factory/app:pull",
                                   headers={"Authorization": basic})
    token = json.loads(urllib.request.urlopen(asked, timeout=10).read())["access_token"]
    for replica in secured_set.replicas:  # each replica directly, whichever one issued it
        try:
            urllib.request.urlopen(urllib.request.Request(f"{replica.url}/v2/factory/app/tags/list",
                                                          headers={"Authorization": f"Bearer {token}"}), timeout=10)
        except urllib.error.HTTPError as answer:
            assert answer.code == 404, f"{replica.host} refused the token: {answer.code}"  # known token, no repo


def test_skopeo_and_docker_log_in_push_and_pull_through_the_set(secured_set, dockerd, tmp_path: Path):
    layout = tmp_path / "image"
    digest = make_image(layout, "v1", layers=2, size="256K")
    skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", ":".join(WRITER),
           f"oci:{layout}:v1", f"docker://{secured_set.host}/factory/app:v1")
    pulled = tmp_path / "pulled"
    skopeo("copy", "--src-tls-verify=false", "--src-creds", ":".join(READER),
           f"docker://{secured_set.host}/factory/app:v1", f"oci:{pulled}:v1")
    assert manifest_digest(pulled, "v1") == digest

    (tmp_path / "rootfs.tar").write_bytes(rootfs_tar(os.urandom(200_000)))
    reference = f"{secured_set.host}/factory/docker-pushed:v1"
    dockerd.docker("import", str(tmp_path / "rootfs.tar"), reference)
    docker_login(dockerd, secured_set.host, *WRITER)  # a refresh token, then a refresh grant per push and pull
    assert "Pushed" in dockerd.docker("push", reference).stdout
    dockerd.docker("rmi", reference)
    dockerd.docker("pull", reference)
