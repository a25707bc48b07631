"""Real clients against a registry with tokens (SPEC 10): containerd/ctr 1.6, moby 20.10 (the IoT Edge engine, by its
CLI and by the Engine API as edgeAgent drives it) and skopeo, directly and through nginx as the IoT Edge API proxy.

Each client uses the token flow its own way (../shared/reference/real-clients.md sections 3 and 6):
    ctr --user               POST /acr/oauth2/token grant_type=password (falls back to GET + Basic on a 401)
    docker login             GET  /acr/oauth2/token?client_id=docker&offline_token=true + Basic -> refresh_token,
                             kept as `identitytoken` in DOCKER_CONFIG/config.json
    docker pull/push after   POST /acr/oauth2/token grant_type=refresh_token (no fallback: it must work)
    Engine API X-Registry-Auth, skopeo --creds
                             GET  /acr/oauth2/token?scope=... + Basic

Direct tests go through a RecordingProxy (a plain-HTTP reverse proxy in this process that keeps `Host`, so the
registry's realm names it and the token requests come back through it): it records every request with its form body,
so the grant each client used is seen, not guessed. The API-proxy tests read nginx's access log instead.
"""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest

from tests.api.auth_fixtures import PASSWORDS, start_secured
from tests.support.clients import RecordingProxy, engine_request, registry_auth, registry_requests, rootfs_tar, skopeo
from tests.support.http import basic, request
from tests.support.layouts import make_image, manifest_digest, read_blob
from tests.support.pki import non_loopback_ipv4

READER = ("reader1", PASSWORDS["reader1"])
WRITER = ("writer1", PASSWORDS["writer1"])
SERVICE = "factory-root"
ACCEPT_ALL = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.docker.distribution.manifest.v2+json",
                        "application/vnd.oci.image.index.v1+json",
                        "application/vnd.docker.distribution.manifest.list.v2+json"])


@dataclass(frozen=True)
class PushedImage:
    layout: Path
    digest: str
    blobs: tuple[str, ...]  # config and layers


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """One registry with the standard tokens for the module (writer1: factory/* read+write; reader1: factory/app)."""
    registry = start_secured(tmp_path_factory.mktemp("real-clients-auth"))
    try:
        yield registry
    finally:
        registry.process.stop()
    log = registry.process.log()
    assert "Traceback" not in log and " ERROR " not in log and " WARNING " not in log, log


@pytest.fixture(scope="module")
def app_image(secured, tmp_path_factory) -> PushedImage:
    """factory/app:v1, pushed by skopeo as writer1."""
    layout = tmp_path_factory.mktemp("app-image") / "image"
    digest = make_image(layout, "v1", layers=2, size="128K")
    skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", "--dest-creds", ":".join(WRITER),
           f"oci:{layout}:v1", f"docker://{secured.host}/factory/app:v1")
    manifest = json.loads(read_blob(layout, digest))
    return PushedImage(layout, digest, (manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])))


@pytest.fixture
def recorder(secured):
    proxy = RecordingProxy(secured.host)
    try:
        yield proxy
    finally:
        proxy.stop()


def served_manifest_digest(registry, repository: str, reference: str) -> str | None:
    """Docker-Content-Digest of a manifest, asked directly with writer1's Basic credentials; None when absent."""
    reply = request(f"{registry.url}/v2/{repository}/manifests/{reference}", "HEAD",
                    headers={**basic(*WRITER), "Accept": ACCEPT_ALL})
    assert reply.status in (200, 404), (reply.status, reply.headers)
    return reply.headers["Docker-Content-Digest"] if reply.status == 200 else None


def challenge_realm(challenge: str) -> str | None:
    match = re.search(r'realm="([^"]*)"', challenge)
    return match.group(1) if match else None


def docker_login(dockerd, host: str, name: str, password: str, check: bool = True):
    return dockerd.docker("login", "-u", name, "--password-stdin", host, input=password + "\n", check=check)


def docker_auths(dockerd) -> dict:
    return json.loads((dockerd.cli_config / "config.json").read_text()).get("auths", {})


# --- containerd / ctr: POST grant_type=password ---------------------------------------------------------------


def test_ctr_pulls_with_a_password_grant_and_a_wrong_password_is_refused(recorder, app_image, containerd):
    reference = f"{recorder.host}/factory/app:v1"
    containerd.ctr("content", "rm", *app_image.blobs, check=False)  # so the pull below must fetch every blob

    refused = containerd.ctr("images", "pull", "--user", "reader1:wrong-password", reference, check=False)

    assert refused.returncode != 0 and "failed to fetch oauth token: unexpected status: 401" in refused.stderr, refused
    assert containerd.image_digest(reference) is None
    tokens = recorder.token_requests()
    assert (tokens[0].method, tokens[0].form.get("grant_type"), tokens[0].form.get("username"), tokens[0].status) \
        == ("POST", "password", "reader1", 401), tokens
    assert all(t.status == 401 for t in tokens), tokens  # ctr's fallback GET + Basic is refused too
    assert not [e for e in recorder.exchanges if e.authorization == "Bearer"], recorder.exchanges
    recorder.exchanges.clear()

    pulled = containerd.ctr("images", "pull", "--user", ":".join(READER), reference, debug=True)

    assert containerd.image_digest(reference) == app_image.digest
    check = containerd.ctr("images", "check", f"name=={reference}").stdout
    assert re.search(r"complete \(3/3\)\s+\S+ \S+/\S+ \S+\s+true", check), check  # every blob there, unpacked
    for blob in app_image.blobs:
        assert containerd.content(blob) == read_blob(app_image.layout, blob)
    # the challenge ctr followed named the realm at the address it used
    challenges = [e.challenge for e in recorder.exchanges if e.status == 401]
    assert challenges and all(challenge_realm(c) == f"http://{recorder.host}/acr/oauth2/token" for c in challenges)
    # ...and it got its tokens with the password grant, and nothing else
    tokens = recorder.token_requests()
    assert tokens, recorder.exchanges
    for token in tokens:
        assert (token.method, token.status, token.authorization) == ("POST", 200, ""), tokens
        assert {k: token.form.get(k) for k in ("grant_type", "username", "password", "client_id", "service")} == {
            "grant_type": "password", "username": "reader1", "password": PASSWORDS["reader1"],
            "client_id": "containerd-client", "service": SERVICE}, tokens
        assert "repository:factory/app:pull" in token.form["scope"].split(), tokens
    fetched = {e.path.rsplit("/", 1)[1] for e in recorder.exchanges
               if e.method == "GET" and "/blobs/" in e.path and (e.authorization, e.status) == ("Bearer", 200)}
    assert fetched == set(app_image.blobs), recorder.exchanges
    # ctr's own view (its --debug log): every registry request went to the address it was given
    assert {url.split("/v2/")[0] for _, url in registry_requests(pulled.stderr)} == {f"http://{recorder.host}"}


def test_ctr_pushes_as_writer1_and_is_refused_as_reader1(recorder, app_image, containerd, secured):
    source = f"{recorder.host}/factory/app:v1"
    containerd.ctr("images", "pull", "--user", ":".join(READER), source)

    refused_reference = f"{recorder.host}/factory/app:ctr-refused"
    containerd.ctr("images", "tag", source, refused_reference)
    recorder.exchanges.clear()
    refused = containerd.ctr("images", "push", "--user", ":".join(READER), refused_reference, check=False)

    assert refused.returncode != 0 and "insufficient_scope" in refused.stderr, refused
    assert served_manifest_digest(secured, "factory/app", "ctr-refused") is None
    refusals = [e for e in recorder.exchanges
                if e.method == "PUT" and e.path == "/v2/factory/app/manifests/ctr-refused"]
    assert refusals and all(e.status == 401 and 'error="insufficient_scope"' in e.challenge
                            and 'scope="repository:factory/app:push"' in e.challenge for e in refusals), refusals
    assert all(t.form.get("grant_type") == "password" and t.status == 200 for t in recorder.token_requests())

    pushed_reference = f"{recorder.host}/factory/ctr-pushed:v1"
    containerd.ctr("images", "tag", source, pushed_reference)
    recorder.exchanges.clear()
    containerd.ctr("images", "push", "--user", ":".join(WRITER), pushed_reference)

    assert served_manifest_digest(secured, "factory/ctr-pushed", "v1") == app_image.digest
    tokens = recorder.token_requests()
    assert tokens and all((t.method, t.form.get("grant_type"), t.form.get("username"), t.status)
                          == ("POST", "password", "writer1", 200) for t in tokens), tokens
    assert any("repository:factory/ctr-pushed:pull,push" in t.form.get("scope", "").split() for t in tokens), tokens
    assert ("PUT", "/v2/factory/ctr-pushed/manifests/v1", "Bearer", 201) in \
        [(e.method, e.path, e.authorization, e.status) for e in recorder.exchanges]


# --- the docker engine: docker login keeps a refresh token; pulls and pushes use grant_type=refresh_token ----------


def test_docker_login_keeps_a_refresh_token_and_pulls_with_the_refresh_grant(recorder, app_image, dockerd):
    failed = docker_login(dockerd, recorder.host, "reader1", "wrong-password", check=False)

    assert failed.returncode != 0 and "invalid username or password" in failed.stderr, failed
    assert recorder.host not in docker_auths(dockerd)
    recorder.exchanges.clear()

    docker_login(dockerd, recorder.host, *READER)

    (login,) = recorder.token_requests()
    assert (login.method, login.authorization, login.status) == ("GET", "Basic", 200), login
    assert (login.query.get("client_id"), login.query.get("offline_token")) == (["docker"], ["true"]), login
    entry = docker_auths(dockerd)[recorder.host]
    identity_token = entry["identitytoken"]
    claims = jwt.decode(identity_token, options={"verify_signature": False})
    assert (claims["sub"], claims["typ"], claims["aud"]) == ("reader1", "refresh", SERVICE), claims
    assert base64.b64decode(entry["auth"]) == b"reader1:"  # the CLI keeps no password once it has a refresh token
    assert PASSWORDS["reader1"] not in (dockerd.cli_config / "config.json").read_text()
    recorder.exchanges.clear()

    dockerd.docker("pull", f"{recorder.host}/factory/app:v1")

    assert f"{recorder.host}/factory/app@{app_image.digest}" in dockerd.repo_digests(f"{recorder.host}/factory/app:v1")
    tokens = recorder.token_requests()
    assert tokens, recorder.exchanges
    for token in tokens:
        assert (token.method, token.status) == ("POST", 200), tokens
        assert {k: token.form.get(k) for k in ("grant_type", "refresh_token", "client_id", "service")} == {
            "grant_type": "refresh_token", "refresh_token": identity_token, "client_id": "docker",
            "service": SERVICE}, tokens
        assert token.form["scope"].split() == ["repository:factory/app:pull"], tokens
    assert not [e for e in recorder.exchanges if e.authorization == "Basic"], recorder.exchanges  # no password sent
    assert ("GET", f"/v2/factory/app/manifests/{app_image.digest}", "Bearer", 200) in \
        [(e.method, e.path, e.authorization, e.status) for e in recorder.exchanges]


def test_docker_pushes_as_writer1_and_is_denied_as_reader1_with_the_reason(recorder, dockerd, secured, tmp_path):
    (tmp_path / "rootfs.tar").write_bytes(rootfs_tar(os.urandom(200_000)))
    reference = f"{recorder.host}/factory/docker-pushed:v1"
    dockerd.docker("import", str(tmp_path / "rootfs.tar"), reference)
    docker_login(dockerd, recorder.host, *WRITER)
    recorder.exchanges.clear()

    output = dockerd.docker("push", reference).stdout

    pushed_digest = re.search(r"v1: digest: (sha256:[0-9a-f]{64})", output).group(1)
    assert served_manifest_digest(secured, "factory/docker-pushed", "v1") == pushed_digest
    tokens = recorder.token_requests()
    assert tokens and all((t.method, t.form.get("grant_type"), t.status) == ("POST", "refresh_token", 200)
                          for t in tokens), tokens
    kind, name, actions = tokens[0].form["scope"].split(":")
    assert (kind, name, sorted(actions.split(","))) == ("repository", "factory/docker-pushed", ["pull", "push"]), tokens

    docker_login(dockerd, recorder.host, *READER)
    refused_reference = f"{recorder.host}/factory/app:docker-refused"
    dockerd.docker("tag", reference, refused_reference)
    recorder.exchanges.clear()
    refused = dockerd.docker("push", refused_reference, check=False)

    # moby turns a 401 whose challenge says error="insufficient_scope" into DENIED and prints the challenge's
    # error_description (registry/client/errors.go): the user sees Azure's reason.
    assert refused.returncode != 0 and "denied: Insufficient scopes to perform the operation." in refused.stderr, refused
    refusals = [e for e in recorder.exchanges if e.status == 401 and e.authorization == "Bearer"]
    assert refusals and all('error="insufficient_scope"' in e.challenge
                            and 'scope="repository:factory/app:push"' in e.challenge for e in refusals), refusals
    assert served_manifest_digest(secured, "factory/app", "docker-refused") is None


# --- edgeAgent's way: the Engine API with X-Registry-Auth (GET + Basic) -----------------------------------------


def test_edge_agent_pulls_through_the_engine_api_with_x_registry_auth(recorder, app_image, dockerd):
    path = f"/v1.41/images/create?fromImage={recorder.host}/factory/app&tag=v1"

    status, body = engine_request(dockerd.socket, "POST", path,
                                  {"X-Registry-Auth": registry_auth("reader1", "wrong-password", recorder.host)})

    assert status == 500 and "invalid username or password" in json.loads(body)["message"], (status, body)
    recorder.exchanges.clear()

    status, body = engine_request(dockerd.socket, "POST", path,
                                  {"X-Registry-Auth": registry_auth(*READER, recorder.host)})

    messages = [json.loads(line) for line in body.splitlines() if line.strip()]
    assert status == 200 and not [m for m in messages if "error" in m], messages
    assert messages[-1]["status"].startswith("Status: Downloaded newer image for "
                                             f"{recorder.host}/factory/app:v1"), messages
    assert f"{recorder.host}/factory/app@{app_image.digest}" in dockerd.repo_digests(f"{recorder.host}/factory/app:v1")
    tokens = recorder.token_requests()
    assert tokens and all((t.method, t.authorization, t.status) == ("GET", "Basic", 200) for t in tokens), tokens
    assert tokens[0].query.get("scope") == ["repository:factory/app:pull"], tokens
    assert "offline_token" not in tokens[0].query, tokens


# --- through nginx as the IoT Edge API proxy (TLS, test CA, only /v2 and /acr forwarded) ---------------------------


def test_skopeo_and_ctr_log_in_and_pull_through_the_api_proxy(secured, app_image, start_api_proxy, containerd,
                                                             tmp_path: Path):
    proxy = start_api_proxy(secured.host)
    realm = f"https://{proxy.host}/acr/oauth2/token"
    reference = f"{proxy.host}/factory/app:v1"

    challenged = proxy.open("GET", "/v2/factory/app/manifests/v1")
    assert challenged.status == 401
    assert challenged.headers["WWW-Authenticate"] == \
        f'Bearer realm="{realm}",service="{SERVICE}",scope="repository:factory/app:pull"'

    pulled = tmp_path / "pulled"
    skopeo("copy", "--src-cert-dir", str(proxy.cert_dir), "--src-creds", ":".join(READER),
           f"docker://{reference}", f"oci:{pulled}:v1")

    assert manifest_digest(pulled, "v1") == app_image.digest
    for blob in app_image.blobs:
        assert read_blob(pulled, blob) == read_blob(app_image.layout, blob)
    proxy.wait_for_requests(lambda rows: any(
        method == "GET" and uri.startswith("/acr/oauth2/token?") and "account=reader1" in uri and status == 200
        for method, uri, status in rows), "skopeo's GET token request")

    result = containerd.ctr("images", "pull", "--hosts-dir", str(proxy.ctr_hosts_dir), "--user", ":".join(READER),
                            reference, debug=True)

    assert containerd.image_digest(reference) == app_image.digest
    # what ctr saw: the 401 challenge named the proxy's https realm, and it talked only to the proxy
    seen = re.findall(r'response\.header\.www-authenticate="((?:[^"\\]|\\.)*)"', result.stderr)
    assert seen and all(challenge_realm(value.replace('\\"', '"')) == realm for value in seen), result.stderr
    assert {url.split("/v2/")[0] for _, url in registry_requests(result.stderr)} == {f"https://{proxy.host}"}
    proxy.wait_for_requests(lambda rows: ("POST", "/acr/oauth2/token", 200) in rows,
                       "ctr's POST token request (grant_type=password)")
    assert not [row for row in proxy.requests() if row[1].startswith("/acr/") and row[2] not in (200,)], \
        proxy.requests()


def test_docker_logs_in_and_pulls_through_the_api_proxy_on_a_non_loopback_address(secured, app_image, dockerd,
                                                                                    start_api_proxy, test_pki):
    address = non_loopback_ipv4()
    if address is None:
        pytest.skip("no non-loopback IPv4 address: moby never verifies TLS on 127.0.0.0/8")
    proxy = start_api_proxy(secured.host, extra_addresses=[address])
    proxy_host = f"{address}:{proxy.port}"
    dockerd.trust(proxy_host, test_pki.ca_cert)  # /etc/docker/certs.d/<host:port>/ca.crt inside dockerd's namespace

    context = ssl.create_default_context(cafile=str(test_pki.ca_cert))
    with pytest.raises(urllib.error.HTTPError) as challenged:
        urllib.request.urlopen(f"https://{proxy_host}/v2/", timeout=10, context=context)
    assert challenged.value.code == 401
    assert challenge_realm(challenged.value.headers["WWW-Authenticate"]) == f"https://{proxy_host}/acr/oauth2/token"

    docker_login(dockerd, proxy_host, *READER)

    assert docker_auths(dockerd)[proxy_host]["identitytoken"]
    proxy.wait_for_requests(lambda rows: any(
        method == "GET" and uri.startswith("/acr/oauth2/token?") and "offline_token=true" in uri and status == 200
        for method, uri, status in rows), "docker login's GET token request")

    dockerd.docker("pull", f"{proxy_host}/factory/app:v1")

    assert f"{proxy_host}/factory/app@{app_image.digest}" in dockerd.repo_digests(f"{proxy_host}/factory/app:v1")
    # dockerd keeps the manifests it has pulled (in its containerd's content store): this module's earlier pulls of
    # the same image leave it a HEAD of the tag to make; a GET by digest when it has not
    proxy.wait_for_requests(lambda rows: ("POST", "/acr/oauth2/token", 200) in rows and any(
        uri in ("/v2/factory/app/manifests/v1", f"/v2/factory/app/manifests/{app_image.digest}") and status == 200
        for method, uri, status in rows), "docker pull's POST token request (refresh_token grant) and manifest request")
