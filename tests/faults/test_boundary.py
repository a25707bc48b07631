"""The repository boundary of a two-layer hierarchy, attacked (issue 14): a client that may read, push and delete
in demo/app only tries, through every route of the child, to get any byte of other repositories' content; and
finds nothing, at the child or (through the outbox) at the parent.

The parent `factory-root` holds demo/secret (an image, an index of it and a signature referring to it), demo/vault
(an image whose layer's transfer to the child is held midway by the link between them for the whole run, so that
there is always a fill in progress to join) and outside/secret (outside the child's scope: never here). The ReadWrite
child `line1-child` syncs demo/* continuously, so it holds demo/secret for demo/secret. The attacker knows every
digest and size, and uses Basic credentials or a Bearer token of the child's token service. Routes: blobs (GET,
HEAD, Range), manifests by digest and tag, referrers, mount (from the secret repositories, without `from`), uploads
claiming a secret digest (monolithic, PUT, PATCH then PUT), manifests referencing secret content, and the secret
repositories directly. After every attempt, nobody sees the content in demo/app at the child; at the end, once the
outbox has drained, nobody sees it in demo/app at the parent either."""

from __future__ import annotations

import http.client
import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from tests.faults.conftest import figures
from tests.support.hostile import FUZZ
from tests.support.http import basic, bearer, request
from tests.support.oci import OCI_INDEX, OCI_MANIFEST, image_manifest, index_manifest, sha256
from tests.support.processes import wait_until
from tests.sync.boundary import APP, APP_CLIENT, SECRET, HoldingLink, blob_status, child_tokens, push_image
from tests.sync.hierarchy import OPERATOR, READER, WRITER, start_instance

CHILD = "line1-child"
VAULT, OUTSIDE = "demo/vault", "outside/secret"
BODY_LIMIT = 1 << 16  # what is read of an answer: a body streaming from the held transfer is not waited for


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def describe(self) -> str:
        return f"{self.status} {self.headers.get('docker-content-digest', '')} {self.body[:200]!r}"


class Boundary:
    def __init__(self, base: Path) -> None:
        self.root = start_instance(base, "factory-root", children=[(CHILD, "ReadWrite")])
        self.link = HoldingLink(self.root)
        self.child = start_instance(base, CHILD, parent=self.link, mode="ReadWrite", repositories=["demo/*"],
                                    extra={"tokens": child_tokens(CHILD)},
                                    parent_settings={"firstByteTimeout": "PT5M"})
        self.port = self.child.process.port
        self.tags = 0

    def populate(self) -> None:
        secret = push_image(self.root, SECRET, "v1", [os.urandom(256 << 10), os.urandom(3000)])
        index = index_manifest([secret.manifest])
        self._put_manifest(SECRET, "multi", index, OCI_INDEX)
        signature = push_image(self.root, SECRET, "unused", [b"signature " + os.urandom(64)])
        signature_manifest = image_manifest(signature.config, signature.layers, subject=secret.manifest,
                                            artifact_type="application/vnd.example.signature")
        self._put_manifest(SECRET, sha256(signature_manifest), signature_manifest, OCI_MANIFEST)
        outside = push_image(self.root, OUTSIDE, "v1", [os.urandom(8192)])
        own = push_image(self.root, APP, "v1", [os.urandom(4096)])  # the attacker's own repository has content too
        self.secret_blobs = {**secret.blobs, **signature.blobs, **outside.blobs}
        self.secret_manifests = {sha256(body): body for body in (secret.manifest, index, signature_manifest,
                                                                 signature.manifest, outside.manifest)}
        self.subjects = [secret.digest, sha256(index)]
        self.own_config = own.config
        wait_until(lambda: all(blob_status(self.child, SECRET, digest, READER) == 200 for digest in secret.blobs)
                   and request(f"{self.child.url}/v2/{SECRET}/manifests/{sha256(signature_manifest)}",
                               headers=basic(*READER)).status == 200, timeout=60, what="demo/secret at the child")
        # demo/vault last: the sync starts its layer's transfer, which the link holds midway until the end
        vault_layer = os.urandom(1 << 20)
        self.link.held.add(sha256(vault_layer))
        vault = push_image(self.root, VAULT, "v1", [vault_layer])
        self.vault_layer = sha256(vault_layer)
        self.secret_blobs.update(vault.blobs)
        self.secret_manifests[vault.digest] = vault.manifest
        wait_until(lambda: self.link.transfers[self.vault_layer] == 1 and self._transfers_in_progress() == 1,
                   timeout=60, what="the vault layer's transfer held midway")
        self.secret = {**self.secret_blobs, **self.secret_manifests}
        self.samples = [content[start:start + 32] for content in self.secret.values() if len(content) >= 64
                        for start in (0, len(content) // 2, len(content) - 32)]
        token = request(f"{self.child.url}/acr/oauth2/token?" + urlencode(
            [("scope", f"repository:{APP}:pull,push,delete"), ("scope", f"repository:{SECRET}:pull"),
             ("scope", f"repository:{VAULT}:pull")]), headers=basic(*APP_CLIENT)).json()
        assert [entry["name"] for entry in _claims(token["token"])["access"] if entry["actions"]] == [APP], token
        self.credentials = {"basic": basic(*APP_CLIENT), "bearer": bearer(token["token"])}

    def _put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> None:
        reply = request(f"{self.root.url}/v2/{repository}/manifests/{reference}", "PUT", body,
                        {**basic(*WRITER), "Content-Type": media_type})
        assert reply.status == 201, reply.body

    def _transfers_in_progress(self) -> int:
        status = request(f"{self.child.url}/acr/connected/v1/status", headers=basic(*OPERATOR)).json()
        return status["cache"]["transfersInProgress"]

    def call(self, method: str, target: str, headers: dict, body: bytes | None = None) -> Answer:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read(BODY_LIMIT) if method != "HEAD" else b""
            answer = Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
        finally:
            connection.close()
        note(f"{method} {target} -> {answer.describe()}")
        assert answer.status < 500, answer.describe()
        return answer

    def exposes(self, answer: Answer) -> bool:
        """A success that names or carries secret content."""
        if answer.status >= 300:
            return False
        named = answer.headers.get("docker-content-digest") in self.secret
        return named or any(sample in answer.body for sample in self.samples) or any(
            digest.encode() in answer.body for digest in self.secret)

    def linked_in_app(self, digest: str) -> bool:
        """Whether the content is in demo/app at the child now, for anybody."""
        return (blob_status(self.child, APP, digest, READER) != 404
                or request(f"{self.child.url}/v2/{APP}/manifests/{digest}", "HEAD", headers=basic(*READER)).status != 404)

    def close(self) -> None:
        self.link.release()
        self.child.stop()
        self.root.stop()  # before the link: its long polls through the link end with it
        self.link.stop()


def _claims(token: str) -> dict:
    import base64

    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture(scope="module")
def boundary(tmp_path_factory):
    boundary = Boundary(tmp_path_factory.mktemp("boundary"))
    try:
        boundary.populate()
        yield boundary
    finally:
        boundary.close()


# --- the routes: each returns what the attacker got back ------------------------------------------------------


def read_blob(boundary: Boundary, data, digest: str, headers: dict) -> list[Answer]:
    method = data.draw(st.sampled_from(["GET", "HEAD"]))
    size = len(boundary.secret.get(digest, b"")) or 1024
    byte_range = data.draw(st.one_of(st.none(), st.builds(lambda a, b: f"bytes={min(a, b)}-{max(a, b)}",
                                                          st.integers(0, size + 8), st.integers(0, size + 8)),
                                      st.integers(1, size).map(lambda n: f"bytes=-{n}"),
                                      st.integers(0, size).map(lambda n: f"bytes={n}-")))
    extra = {"Range": byte_range} if byte_range else {}
    return [boundary.call(method, f"/v2/{APP}/blobs/{digest}", {**headers, **extra})]


def read_manifest(boundary: Boundary, data, digest: str, headers: dict) -> list[Answer]:
    reference = data.draw(st.sampled_from([digest, "multi", "unused"]))  # by digest, or by a tag of demo/secret
    method = data.draw(st.sampled_from(["GET", "HEAD"]))
    accept = data.draw(st.sampled_from([OCI_MANIFEST, OCI_INDEX, "*/*", f"{OCI_MANIFEST}, {OCI_INDEX}"]))
    return [boundary.call(method, f"/v2/{APP}/manifests/{reference}", {**headers, "Accept": accept})]


def referrers(boundary: Boundary, data, digest: str, headers: dict) -> list[Answer]:
    subject = data.draw(st.sampled_from([*boundary.subjects, digest]))
    query = data.draw(st.sampled_from(["", "?artifactType=application/vnd.example.signature"]))
    answer = boundary.call("GET", f"/v2/{APP}/referrers/{subject}{query}", headers)
    if answer.status == 200:  # an empty index is the right answer: no secret descriptor in it
        listed = {entry.get("digest") for entry in json.loads(answer.body)["manifests"]}
        assert not listed & set(boundary.secret), answer.describe()
        return []
    return [answer]


def mount(boundary: Boundary, data, digest: str, headers: dict) -> list[Answer]:
    source = data.draw(st.sampled_from([SECRET, VAULT, OUTSIDE, None]))
    query = {"mount": digest, **({"from": source} if source else {})}
    answer = boundary.call("POST", f"/v2/{APP}/blobs/uploads/?{urlencode(query)}", headers)
    if answer.status == 202:  # the fallback session: an ordinary (empty) upload, given back
        assert boundary.call("DELETE", urlsplit(answer.headers["location"]).path, headers).status == 204
        return []
    return [answer]


def upload(boundary: Boundary, data, digest: str, headers: dict) -> list[Answer]:
    """Claim a secret digest for bytes the attacker has (none, some, part of the secret's size)."""
    body = data.draw(st.sampled_from([b"", b"x", os.urandom(1024)]))
    way = data.draw(st.sampled_from(["monolithic", "put", "patch-put"]))
    if way == "monolithic":
        return [boundary.call("POST", f"/v2/{APP}/blobs/uploads/?digest={quote(digest)}", headers, body)]
    started = boundary.call("POST", f"/v2/{APP}/blobs/uploads/", headers)
    assert started.status == 202, started.describe()
    location = urlsplit(started.headers["location"]).path
    if way == "patch-put":
        patched = boundary.call("PATCH", location, {**headers, "Content-Type": "application/octet-stream"}, body)
        assert patched.status == 202, patched.describe()
        body = b""
    finished = boundary.call("PUT", f"{location}?digest={quote(digest)}", headers, body)
    boundary.call("DELETE", location, headers)  # whatever is left of the session
    return [finished]


def put_manifest(boundary: Boundary, data, digest: str, headers: dict) -> list[Answer]:
    """A manifest in demo/app that references secret content: the child must refuse it (else the outbox would
    carry it to the parent)."""
    boundary.tags += 1
    tag = f"attack-{boundary.tags}"
    blobs = [digest] if digest in boundary.secret_blobs else list(boundary.secret_blobs)[:2]
    kind = data.draw(st.sampled_from(["image", "index"]))
    if kind == "image":
        document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": sha256(boundary.own_config), "size": len(boundary.own_config)},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob,
                                "size": len(boundary.secret_blobs[blob])} for blob in blobs]}
        media_type = OCI_MANIFEST
    else:
        manifests = [digest] if digest in boundary.secret_manifests else list(boundary.secret_manifests)[:1]
        document = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                    "manifests": [{"mediaType": OCI_MANIFEST, "digest": manifest,
                                   "size": len(boundary.secret_manifests[manifest])} for manifest in manifests]}
        media_type = OCI_INDEX
    answer = boundary.call("PUT", f"/v2/{APP}/manifests/{tag}", {**headers, "Content-Type": media_type},
                           json.dumps(document).encode())
    assert answer.status != 201, f"a manifest referencing secret content was taken: {answer.describe()}"
    return [answer]


def other_repository(boundary: Boundary, data, digest: str, headers: dict) -> list[Answer]:
    repository = data.draw(st.sampled_from([SECRET, VAULT, OUTSIDE]))
    kind = data.draw(st.sampled_from(["blobs", "manifests", "tags"]))
    target = f"/v2/{repository}/tags/list" if kind == "tags" else f"/v2/{repository}/{kind}/{digest}"
    return [boundary.call(data.draw(st.sampled_from(["GET", "HEAD"])), target, headers)]


ROUTES = {"blob reads": read_blob, "manifest reads": read_manifest, "referrers": referrers, "mounts": mount,
          "uploads": upload, "manifest pushes": put_manifest, "other repositories": other_repository}


@settings(FUZZ, max_examples=200)
@given(data=st.data(), route=st.sampled_from(sorted(ROUTES)), who=st.sampled_from(["basic", "bearer"]))
def test_a_client_of_one_repository_gets_nothing_of_another_through_any_route_of_the_child(boundary, data, route,
                                                                                          who):
    in_progress = data.draw(st.integers(0, 3)) == 0  # a quarter of the attacks aim at the transfer in progress
    digest = boundary.vault_layer if in_progress else data.draw(st.sampled_from(sorted(boundary.secret)))
    for answer in ROUTES[route](boundary, data, digest, boundary.credentials[who]):
        assert not boundary.exposes(answer), f"{route}: {answer.describe()}"
        assert answer.status >= 400, f"{route} succeeded: {answer.describe()}"
    assert not boundary.linked_in_app(digest), f"{digest} became part of {APP} after {route}"
    figures[f"boundary: {route} attacks tried"] += 1
    figures[f"boundary: {route} attacks held"] += 1
    if in_progress and route == "blob reads":
        figures["boundary: joins of a transfer in progress tried"] += 1
        figures["boundary: joins of a transfer in progress held"] += 1


def test_the_parent_took_nothing_of_another_repository_into_the_attackers(boundary):
    """After the attacks (and the attacker's own pushes, which the outbox carries up), nothing secret is in
    demo/app at the parent; the held transfer, released, completes once for demo/vault only."""
    own = push_image(boundary.child, APP, "v2", [os.urandom(2048)], credentials=APP_CLIENT)
    boundary.link.release()
    outbox = lambda: request(f"{boundary.child.url}/acr/connected/v1/outbox",  # noqa: E731
                             headers=basic(*OPERATOR)).json()["entries"]
    wait_until(lambda: outbox() == [], timeout=60, what="the outbox drained")
    assert request(f"{boundary.root.url}/v2/{APP}/manifests/v2", headers=basic(*READER)).body == own.manifest
    wait_until(lambda: blob_status(boundary.child, VAULT, boundary.vault_layer, READER) == 200, timeout=60,
               what="the vault layer at the child")
    assert boundary.link.transfers[boundary.vault_layer] == 1
    for instance in (boundary.child, boundary.root):
        for digest in boundary.secret:
            figures["boundary: secret content looked for in demo/app after the attacks tried"] += 1
            assert blob_status(instance, APP, digest, READER) == 404, (instance.name, digest)
            assert request(f"{instance.url}/v2/{APP}/manifests/{digest}", "HEAD", headers=basic(*READER)).status == 404
            figures["boundary: secret content looked for in demo/app after the attacks held"] += 1
        tags = request(f"{instance.url}/v2/{APP}/tags/list", headers=basic(*READER)).json()["tags"]
        assert sorted(tags) == ["v1", "v2"], (instance.name, tags)
