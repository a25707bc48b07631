"""Tokens, scope maps and the Docker token flow over raw HTTP (SPEC 5 and 10)."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.api.auth_fixtures import PASSWORDS, start_secured, standard_tokens, token_entry
from tests.support.http import basic, bearer, request
from tests.support.oci import image_manifest, sha256
from tests.support.processes import wait_until
from tests.support.raw_client import call, raw_exchange


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    registry = start_secured(tmp_path_factory.mktemp("secured"))
    try:
        yield registry
    finally:
        registry.process.stop()


def get_token(registry, name: str | None, password: str | None, *scopes: str, extra: str = "") -> dict:
    query = "&".join([f"service=factory-root"] + [f"scope={scope}" for scope in scopes]) + extra
    headers = basic(name, password) if name else {}
    reply = request(f"{registry.url}/acr/oauth2/token?{query}", headers=headers)
    assert reply.status == 200, reply.body
    return reply.json()


def push_image_as(registry, headers: dict, repository: str, tag: str = "v1") -> str:
    config, layer = b'{"os":"linux"}', os.urandom(2048)
    for blob in (config, layer):
        reply = request(f"{registry.url}/v2/{repository}/blobs/uploads/?digest={sha256(blob)}", "POST", blob, headers)
        assert reply.status == 201, reply.body
    manifest = image_manifest(config, [layer])
    reply = request(f"{registry.url}/v2/{repository}/manifests/{tag}", "PUT", manifest,
                    {**headers, "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert reply.status == 201, reply.body
    return sha256(manifest)


def test_unauthenticated_requests_get_the_bearer_challenge(secured):
    reply = request(f"{secured.url}/v2/")
    assert reply.status == 401 and reply.error_code == "UNAUTHORIZED"
    assert reply.headers["WWW-Authenticate"] == (
        f'Bearer realm="http://{secured.host}/acr/oauth2/token",service="factory-root"')
    reply = request(f"{secured.url}/v2/factory/app/manifests/v1")
    assert reply.status == 401
    assert 'scope="repository:factory/app:pull"' in reply.headers["WWW-Authenticate"]


def test_the_service_is_fixed_whatever_the_host_header_says(secured):
    reply = request(f"{secured.url}/v2/", headers={"Host": "evil.example:1234"})
    assert 'service="factory-root"' in reply.headers["WWW-Authenticate"]


def test_token_get_with_basic_grants_the_allowed_subset(secured):
    body = get_token(secured, "reader1", PASSWORDS["reader1"], "repository:factory/app:pull,push",
                     "repository:other/thing:pull")
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["access"] == [
        {"type": "repository", "name": "factory/app", "actions": ["pull"]},
        {"type": "repository", "name": "other/thing", "actions": []},
    ]
    assert claims["aud"] == "factory-root" and claims["sub"] == "reader1"
    assert body["access_token"] == body["token"] and body["expires_in"] > 0
    assert "refresh_token" not in body


def test_bearer_token_pulls_and_lacking_push_gets_insufficient_scope(secured):
    push_image_as(secured, basic("writer1", PASSWORDS["writer1"]), "factory/app")
    token = get_token(secured, "reader1", PASSWORDS["reader1"], "repository:factory/app:pull,push")["token"]
    assert request(f"{secured.url}/v2/factory/app/manifests/v1", headers=bearer(token)).status == 200
    reply = request(f"{secured.url}/v2/factory/app/blobs/uploads/", "POST", headers=bearer(token))
    assert reply.status == 401 and reply.error_code == "UNAUTHORIZED"
    challenge = reply.headers["WWW-Authenticate"]
    assert 'scope="repository:factory/app:push"' in challenge and 'error="insufficient_scope"' in challenge


def test_basic_credentials_lacking_the_action_get_403_insufficient_scopes(secured):
    reply = request(f"{secured.url}/v2/factory/app/blobs/uploads/", "POST",
                    headers=basic("reader1", PASSWORDS["reader1"]))
    assert reply.status == 403 and reply.error_code == "DENIED"
    assert reply.error_message == "Insufficient scopes to perform the operation."
    reply = request(f"{secured.url}/v2/factory/other/tags/list", headers=basic("reader1", PASSWORDS["reader1"]))
    assert reply.status == 403


def test_post_password_grant_and_refresh_token_grant(secured):
    form = (f"grant_type=password&username=writer1&password={PASSWORDS['writer1']}&service=factory-root"
            "&client_id=containerd-client&access_type=offline&scope=repository:factory/app:pull,push").encode()
    reply = request(f"{secured.url}/acr/oauth2/token", "POST", form,
                    {"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status == 200, reply.body
    refresh = reply.json()["refresh_token"]
    form = (f"grant_type=refresh_token&refresh_token={refresh}&service=factory-root&client_id=docker"
            "&scope=repository:factory/app:pull").encode()
    reply = request(f"{secured.url}/oauth2/token", "POST", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status == 200, reply.body
    claims = jwt.decode(reply.json()["access_token"], options={"verify_signature": False})
    assert claims["access"] == [{"type": "repository", "name": "factory/app", "actions": ["pull"]}]
    assert request(f"{secured.url}/v2/factory/app/tags/list", headers=bearer(reply.json()["access_token"])).status == 200


def test_a_token_form_that_arrives_in_two_tcp_writes_is_read_whole(secured):
    form = (f"grant_type=password&username=reader1&password={PASSWORDS['reader1']}&service=factory-root"
            "&client_id=containerd-client&scope=repository:factory/app:pull").encode()
    head = (f"POST /acr/oauth2/token HTTP/1.1\r\nHost: {secured.host}\r\nContent-Length: {len(form)}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\n").encode()

    def barrier() -> None:  # two full round trips on other connections: the handler is reading by now
        for _ in range(2):
            assert request(f"{secured.url}/healthz").status == 200

    answers = raw_exchange(secured.process.port, head + form[:40], between=barrier, tail=form[40:], responses=1)
    assert answers and answers[0].status == 200, [answer.describe() for answer in answers]
    claims = jwt.decode(json.loads(answers[0].body)["token"], options={"verify_signature": False})
    assert claims["sub"] == "reader1"
    assert claims["access"] == [{"type": "repository", "name": "factory/app", "actions": ["pull"]}]


def test_a_token_form_over_its_cap_is_413_naming_the_cap(secured):
    """Sent chunked, so the cap is found while reading, not from a Content-Length."""
    padding = b"&client_id=" + b"x" * 70_000
    reply = call(secured.process.port, "POST", "/acr/oauth2/token",
                 headers={"Content-Type": "application/x-www-form-urlencoded"},
                 chunks=[b"grant_type=password&username=reader1", padding[:30_000], padding[30_000:]])
    assert reply.status == 413 and b"64 KiB" in reply.body, reply.describe()


def test_docker_login_gets_a_refresh_token_with_offline_token(secured):
    body = get_token(secured, "writer1", PASSWORDS["writer1"], extra="&client_id=docker&offline_token=true")
    assert body["refresh_token"]
    form = f"grant_type=refresh_token&refresh_token=garbage&service=factory-root".encode()
    reply = request(f"{secured.url}/acr/oauth2/token", "POST", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status == 401


def test_basic_credentials_work_directly_on_v2(secured):
    assert request(f"{secured.url}/v2/", headers=basic("reader1", PASSWORDS["reader1"])).status == 200
    assert request(f"{secured.url}/v2/factory/app/tags/list", headers=basic("reader1", PASSWORDS["reader1"])).status in (200, 404)


@pytest.mark.parametrize("name,password", [("reader1", "wrong"), ("nobody1", "x"), ("disabled1", PASSWORDS["disabled1"])])
def test_wrong_unknown_and_disabled_credentials_are_401(secured, name, password):
    reply = request(f"{secured.url}/v2/", headers=basic(name, password))
    assert reply.status == 401 and reply.error_code == "UNAUTHORIZED"
    reply = request(f"{secured.url}/acr/oauth2/token?service=factory-root", headers=basic(name, password))
    assert reply.status == 401


def test_a_rotated_token_works_with_either_of_its_two_passwords(secured):
    for password in ("old-password", PASSWORDS["rotated1"]):
        assert request(f"{secured.url}/v2/", headers=basic("rotated1", password)).status == 200


def _signing_key(secured) -> ec.EllipticCurvePrivateKey:
    pem = (secured.process.data_dir / "auth" / "token-signing-key.pem").read_bytes()
    return serialization.load_pem_private_key(pem, password=None)


def _claims(**overrides) -> dict:
    now = int(time.time())
    claims = {"iss": "factory-root", "aud": "factory-root", "sub": "writer1", "iat": now, "nbf": now, "exp": now + 600,
              "typ": "access", "cred": "", "access": [{"type": "repository", "name": "factory/app", "actions": ["pull"]}]}
    claims.update(overrides)
    return claims


def test_the_signing_key_is_private_to_the_process(secured):
    get_token(secured, "reader1", PASSWORDS["reader1"], "repository:factory/app:pull")  # the first JWT makes the key
    path = secured.process.data_dir / "auth" / "token-signing-key.pem"
    assert path.stat().st_mode & 0o077 == 0


def test_forged_and_expired_jwts_are_refused(secured):
    real = get_token(secured, "reader1", PASSWORDS["reader1"], "repository:factory/app:pull")["token"]
    real_claims = jwt.decode(real, options={"verify_signature": False})
    header, payload, signature = real.split(".")
    tampered_claims = dict(real_claims, access=[{"type": "repository", "name": "factory/app", "actions": ["pull", "push"]}])
    tampered = ".".join([header, base64.urlsafe_b64encode(json.dumps(tampered_claims).encode()).decode().rstrip("="), signature])
    other_key = ec.generate_private_key(ec.SECP256R1())
    key = _signing_key(secured)
    forged = {
        "alg none": jwt.encode(dict(real_claims), key=None, algorithm="none"),
        "tampered payload": tampered,
        "another instance's key": jwt.encode(dict(real_claims), other_key, algorithm="ES256"),
        "wrong audience": jwt.encode(dict(real_claims, aud="other-registry"), key, algorithm="ES256"),
        "expired": jwt.encode(dict(real_claims, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200,
                                   nbf=int(time.time()) - 7200), key, algorithm="ES256"),
        "refresh token used as access": jwt.encode(dict(real_claims, typ="refresh"), key, algorithm="ES256"),
    }
    assert request(f"{secured.url}/v2/factory/app/tags/list", headers=bearer(real)).status in (200, 404)
    for what, token in forged.items():
        reply = request(f"{secured.url}/v2/factory/app/tags/list", headers=bearer(token))
        assert reply.status == 401, what
        assert reply.error_code == "UNAUTHORIZED", what


@pytest.mark.parametrize("header", [
    "Basic", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(), "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
    "Bearer", "Bearer a.b.c", "Bearer " + "x" * 5000, "Digest abc", "Negotiate", " ", "Basic " + "A" * 10000,
])
def test_malformed_authorization_headers_are_401_never_500(secured, header):
    reply = request(f"{secured.url}/v2/factory/app/tags/list", headers={"Authorization": header})
    # A header over the HTTP parser's 8 KiB line limit is refused by the parser itself with 400.
    expected = 400 if len(header) > 8190 else 401
    assert reply.status == expected, (header[:40], reply.status, reply.body[:200])


def test_the_catalog_lists_only_what_the_caller_may_read(secured):
    writer = basic("writer1", PASSWORDS["writer1"])
    push_image_as(secured, writer, "factory/app")
    push_image_as(secured, writer, "factory/secret")
    reply = request(f"{secured.url}/v2/_catalog", headers=basic("catalog1", PASSWORDS["catalog1"]))
    assert reply.status == 200
    assert reply.json()["repositories"] == ["factory/app"]
    token = get_token(secured, "writer1", PASSWORDS["writer1"], "registry:catalog:*")["token"]
    assert request(f"{secured.url}/v2/_catalog", headers=bearer(token)).json()["repositories"] == ["factory/app", "factory/secret"]


def test_the_token_endpoint_refuses_another_service_and_unknown_grants(secured):
    assert request(f"{secured.url}/acr/oauth2/token?service=other").status == 400
    reply = request(f"{secured.url}/acr/oauth2/token", "POST", b"grant_type=client_credentials",
                    {"Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status == 400


def test_failed_logins_are_throttled_per_token_name_and_address(tmp_path: Path):
    registry = start_secured(tmp_path)
    try:
        statuses = [request(f"{registry.url}/v2/", headers=basic("reader1", "wrong")).status for _ in range(8)]
        assert statuses[0] == 401 and 429 in statuses
        reply = request(f"{registry.url}/v2/", headers=basic("reader1", PASSWORDS["reader1"]))
        assert reply.status == 429 and reply.error_code == "TOOMANYREQUESTS"
        assert 1 <= int(reply.headers["Retry-After"]) <= 30
        # another token name is not affected
        assert request(f"{registry.url}/v2/", headers=basic("writer1", PASSWORDS["writer1"])).status == 200
        # and the throttled one works again once the wait is over
        wait_until(lambda: request(f"{registry.url}/v2/", headers=basic("reader1", PASSWORDS["reader1"])).status == 200,
                   timeout=40, what="the throttle to expire", interval=0.5)
    finally:
        registry.process.stop()


def test_anonymous_pull_allows_pulls_but_never_pushes(tmp_path: Path):
    registry = start_secured(tmp_path, {"name": "factory-root", "anonymousPull": True, "tokens": standard_tokens()})
    try:
        push_image_as(registry, basic("writer1", PASSWORDS["writer1"]), "factory/app")
        anonymous = get_token(registry, None, None, "repository:factory/app:pull,push")
        assert jwt.decode(anonymous["token"], options={"verify_signature": False})["access"][0]["actions"] == ["pull"]
        assert request(f"{registry.url}/v2/factory/app/manifests/v1", headers=bearer(anonymous["token"])).status == 200
        assert request(f"{registry.url}/v2/factory/app/manifests/v1").status == 200
        reply = request(f"{registry.url}/v2/factory/app/blobs/uploads/", "POST")
        assert reply.status == 401
    finally:
        registry.process.stop()


def test_duplicate_scopes_are_merged_in_the_token(secured):
    body = get_token(secured, "writer1", PASSWORDS["writer1"], "repository:factory/app:pull",
                     "repository:factory/app:push,pull", "repository:factory/app:pull%20repository:factory/b:pull")
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["access"] == [
        {"type": "repository", "name": "factory/app", "actions": ["pull", "push"]},
        {"type": "repository", "name": "factory/b", "actions": ["pull"]},
    ]
    assert body["scope"] == "repository:factory/app:pull,push repository:factory/b:pull"


def test_re_enabling_a_token_does_not_revive_the_jwts_issued_before_it_was_disabled(tmp_path: Path):
    registry = start_secured(tmp_path)
    try:
        def tags(token: str) -> int:
            return request(f"{registry.url}/v2/factory/app/tags/list", headers=bearer(token)).status

        def refresh(token: str) -> int:
            form = f"grant_type=refresh_token&refresh_token={token}&service=factory-root".encode()
            return request(f"{registry.url}/acr/oauth2/token", "POST", form,
                           {"Content-Type": "application/x-www-form-urlencoded"}).status

        push_image_as(registry, basic("writer1", PASSWORDS["writer1"]), "factory/app")
        before = get_token(registry, "reader1", PASSWORDS["reader1"], "repository:factory/app:pull",
                           extra="&offline_token=true")
        assert tags(before["token"]) == 200 and refresh(before["refresh_token"]) == 200
        document = json.loads(json.dumps(registry.document))
        for status in ("disabled", "enabled"):
            document["tokens"]["reader1"]["status"] = status
            registry.write_config(document)
            expected = 200 if status == "enabled" else 401
            wait_until(lambda: request(f"{registry.url}/v2/", headers=basic("reader1", PASSWORDS["reader1"])).status
                       == expected, what=f"the token {status}")
        assert tags(before["token"]) == 401 and refresh(before["refresh_token"]) == 401
        after = get_token(registry, "reader1", PASSWORDS["reader1"], "repository:factory/app:pull",
                          extra="&offline_token=true")
        assert tags(after["token"]) == 200
        # A restart revives neither; the tokens issued since work on.
        registry.process.restart()
        assert tags(before["token"]) == 401 and refresh(before["refresh_token"]) == 401
        assert tags(after["token"]) == 200 and refresh(after["refresh_token"]) == 200
        assert (registry.process.data_dir / "auth" / "revoked-until.json").stat().st_mode & 0o077 == 0
    finally:
        registry.process.stop()


def test_token_changes_apply_at_the_next_request_and_bad_files_keep_the_last_good(tmp_path: Path):
    registry = start_secured(tmp_path)
    try:
        headers = basic("newcomer1", "newcomer-password")
        assert request(f"{registry.url}/v2/", headers=headers).status == 401
        document = dict(registry.document)
        document["tokens"] = dict(document["tokens"], newcomer1=token_entry(["newcomer-password"], ["repositories/*/content/read"]))
        registry.write_config(document)
        wait_until(lambda: request(f"{registry.url}/v2/", headers=headers).status == 200, what="the new token")
        # a bad document changes nothing and says what is wrong
        registry.write_config({**document, "mode": "Sideways", "reportInterval": "soon"})
        wait_until(lambda: any("CONFIG_INVALID" in line for line in registry.process.output), what="CONFIG_INVALID")
        line = next(line for line in registry.process.output if "CONFIG_INVALID" in line)
        assert "mode" in line and "reportInterval" in line
        assert request(f"{registry.url}/v2/", headers=headers).status == 200
        # disabling the token revokes the JWTs it got
        token = get_token(registry, "newcomer1", "newcomer-password", "repository:factory/app:pull")["token"]
        document["tokens"]["newcomer1"]["status"] = "disabled"
        registry.write_config(document)
        wait_until(lambda: request(f"{registry.url}/v2/", headers=headers).status == 401, what="the token disabled")
        assert request(f"{registry.url}/v2/factory/app/tags/list", headers=bearer(token)).status == 401
    finally:
        registry.process.stop()


def test_readonly_refuses_writes_before_any_scope_check(tmp_path: Path):
    document = {"name": "line1-mirror", "mode": "ReadOnly", "parent": {"endpoint": "http://127.0.0.1:9"},
                "repositories": ["factory/*"], "tokens": standard_tokens()}
    registry = start_secured(tmp_path, document)
    try:
        for headers in ({}, basic("writer1", PASSWORDS["writer1"]), basic("reader1", PASSWORDS["reader1"])):
            reply = request(f"{registry.url}/v2/factory/app/blobs/uploads/", "POST", headers=headers)
            assert reply.status == 403 and reply.error_code == "DENIED"
            assert reply.error_message == "This operation is not allowed on this registry."
            reply = request(f"{registry.url}/v2/factory/app/manifests/v1", "DELETE", headers=headers)
            assert reply.status == 405 and reply.error_code == "UNSUPPORTED"
    finally:
        registry.process.stop()


def test_readwrite_child_refuses_pushes_outside_its_repositories(tmp_path: Path):
    document = {"name": "line1-writer", "mode": "ReadWrite", "parent": {"endpoint": "http://127.0.0.1:9"},
                "repositories": ["factory/app"], "tokens": standard_tokens()}
    registry = start_secured(tmp_path, document)
    try:
        writer = basic("writer1", PASSWORDS["writer1"])
        reply = request(f"{registry.url}/v2/factory/other/blobs/uploads/", "POST", headers=writer)
        assert reply.status == 403 and reply.error_message == "Repository factory/other is not synchronized by this registry."
        push_image_as(registry, writer, "factory/app")
    finally:
        registry.process.stop()


def test_too_many_client_tokens_and_oversized_documents_are_config_invalid(tmp_path: Path):
    from connected_registry.settings import ConfigInvalid, validate_desired

    entry = token_entry(["x"], ["repositories/a/content/read"])
    with pytest.raises(ConfigInvalid, match="at most 20"):
        validate_desired({"tokens": {f"client{n:03d}": entry for n in range(21)}})
    gateway = token_entry(["x"], ["gateway/child1/config/read"])
    validate_desired({"tokens": {**{f"client{n:03d}": entry for n in range(20)}, "sync-child1": gateway}})
    with pytest.raises(ConfigInvalid, match="32768-byte limit"):
        validate_desired({"repositories": [f"repo{n:05d}/*" for n in range(4000)]})


def test_login_server_refuses_other_hosts_and_honours_the_proxy_headers(tmp_path: Path):
    registry = start_secured(tmp_path, env={"ACR_REGISTRY_LOGIN_SERVER": "registry.factory.local:8000"})
    try:
        reader = basic("reader1", PASSWORDS["reader1"])
        reply = request(f"{registry.url}/v2/", headers=reader)
        assert reply.status == 403 and "registry.factory.local:8000" in reply.error_message
        proxied = {**reader, "X-Forwarded-Host": "registry.factory.local:8000", "X-Forwarded-Proto": "https"}
        assert request(f"{registry.url}/v2/", headers=proxied).status == 200
        reply = request(f"{registry.url}/v2/", headers={"Host": "registry.factory.local:8000"})
        assert reply.status == 401
        assert reply.headers["WWW-Authenticate"].startswith(
            'Bearer realm="http://registry.factory.local:8000/acr/oauth2/token",service="registry.factory.local:8000"')
        writer = {**basic("writer1", PASSWORDS["writer1"]), "X-Forwarded-Host": "registry.factory.local:8000",
                  "X-Forwarded-Proto": "https"}
        reply = request(f"{registry.url}/v2/factory/app/blobs/uploads/", "POST", headers=writer)
        assert reply.status == 202
        assert reply.headers["Location"].startswith("https://registry.factory.local:8000/v2/factory/app/blobs/uploads/")
    finally:
        registry.process.stop()


def test_behind_trusted_proxies_failures_count_per_forwarded_address(tmp_path: Path):
    document = {"name": "factory-root", "tokens": standard_tokens(), "trustedProxies": ["127.0.0.1/32"]}
    registry = start_secured(tmp_path, document)
    try:
        attacker = {"X-Forwarded-For": "203.0.113.7"}
        # Many names, one address: the address is refused unknown names although no single name failed often.
        statuses = [request(f"{registry.url}/v2/", headers={**attacker, **basic(f"guess{n:03d}", "x")}).status
                    for n in range(10)]
        assert 429 in statuses
        # The right password of a known name is still checked, from there too.
        reply = request(f"{registry.url}/v2/", headers={**attacker, **basic("writer1", PASSWORDS["writer1"])})
        assert reply.status == 200
        statuses = [request(f"{registry.url}/v2/", headers={**attacker, **basic("reader1", "wrong")}).status
                    for _ in range(8)]
        assert 429 in statuses
        # another client behind the same proxy is not affected, for unknown names or for the attacked one
        other = {"X-Forwarded-For": "203.0.113.8"}
        assert request(f"{registry.url}/v2/", headers={**other, **basic("guess999", "x")}).status == 401
        assert request(f"{registry.url}/v2/", headers={**other, **basic("reader1", PASSWORDS["reader1"])}).status == 200
    finally:
        registry.process.stop()


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(tmp_path: Path):
    registry = start_secured(tmp_path)  # no trustedProxies
    try:
        for n in range(10):
            request(f"{registry.url}/v2/", headers={"X-Forwarded-For": "203.0.113.7", **basic(f"guess{n:03d}", "x")})
        # the peer's address was counted, whatever the header said
        reply = request(f"{registry.url}/v2/", headers={"X-Forwarded-For": "203.0.113.8", **basic("guess999", "x")})
        assert reply.status == 429
        reply = request(f"{registry.url}/v2/", headers={"X-Forwarded-For": "203.0.113.7",
                                                          **basic("writer1", PASSWORDS["writer1"])})
        assert reply.status == 200
    finally:
        registry.process.stop()
