"""SIGKILL of a random replica at a random moment while clients push and pull through nginx in front of three
replicas (PostgreSQL + Azurite): no acknowledged write is lost, and the other replicas keep serving while the killed
one is down; then it restarts on its port and the next round begins.

What a client sees, and what the test accepts: nginx retries the next replica on a refused or broken connection
for the requests it may repeat (GET, HEAD, PUT, DELETE), so a pull never notices a dead replica unless the replica
died in the middle of sending the body (then the read breaks, and the client pulls again). A POST or PATCH that was
on the dead replica fails with nginx's 502 (or a broken connection): the client starts that blob's upload again, as
skopeo, docker and containerd do. What it must never see: a 5xx from a replica, a pull of an acknowledged blob or
manifest that answers anything but its bytes, an acknowledged write missing after the rounds on any replica."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import random
import threading
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.faults.conftest import figures
from tests.support.cluster import ReplicaSet
from tests.support.http import request
from tests.support.oci import image_manifest, sha256
from tests.support.processes import wait_until

ACCEPTED_FAILURES = (502, 503, 504)  # nginx's own answers when the replica died under a request it may not repeat


class Refused(Exception):
    """A request that failed the way the module docstring accepts: the client retries."""


class Client(threading.Thread):
    """Pushes blobs (monolithic and chunked) and images through the balancer, and pulls back what was
    acknowledged, until stopped; a failed request starts its whole step again."""

    _tags = itertools.count()

    def __init__(self, balancer_port: int, number: int, acknowledged: list, failures: Counter) -> None:
        super().__init__(daemon=True)
        self.port, self.repository = balancer_port, f"kills/client{number}"
        self.random = random.Random(number)
        self.acknowledged, self.failures = acknowledged, failures
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    self._step()
                except Refused as refused:
                    self.failures[str(refused)] += 1
        except BaseException as error:  # an unacceptable answer: the test reports it
            self.error = error

    def _exchange(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as error:
            raise Refused(f"{method} {type(error).__name__}") from None
        finally:
            connection.close()
        if response.status in ACCEPTED_FAILURES:
            raise Refused(f"{method} {response.status}")
        assert response.status < 500, f"{method} {path}: {response.status} {data[:300]!r}"
        return response, data

    def _step(self) -> None:
        if self.acknowledged and self.random.random() < 0.4:
            self._pull(self.random.choice(self.acknowledged))
        else:
            self._push_image()

    def _pull(self, item: tuple) -> None:
        kind, repository, reference, content = item
        section = "blobs" if kind == "blob" else "manifests"
        response, data = self._exchange("GET", f"/v2/{repository}/{section}/{reference}",
                                        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert (response.status, data) == (200, content), f"acknowledged {kind} {repository}@{reference} lost"

    def _push_image(self) -> None:
        layer = os.urandom(self.random.choice([1, 4096, 300_000, 1_500_000]))
        self._push_blob(layer, chunked=self.random.random() < 0.6)
        config = json.dumps({"n": sha256(layer)}).encode()
        self._push_blob(config, chunked=False)
        manifest = image_manifest(config, [layer])
        tag = f"t{next(self._tags)}"
        response, _ = self._exchange("PUT", f"/v2/{self.repository}/manifests/{tag}", manifest,
                                     {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert response.status == 201, response.status
        self.acknowledged.append(("manifest", self.repository, tag, manifest))

    def _push_blob(self, data: bytes, chunked: bool) -> None:
        digest = sha256(data)
        if not chunked:
            response, body = self._exchange("POST", f"/v2/{self.repository}/blobs/uploads/?digest={digest}", data)
            assert response.status == 201, (response.status, body)
        else:
            response, _ = self._exchange("POST", f"/v2/{self.repository}/blobs/uploads/")
            location = urlsplit(response.getheader("Location")).path
            chunk = max(len(data) // 3, 1)
            for start in range(0, len(data), chunk):
                piece = data[start:start + chunk]
                response, body = self._exchange("PATCH", location, piece, {
                    "Content-Range": f"{start}-{start + len(piece) - 1}", "Content-Type": "application/octet-stream"})
                assert response.status == 202, (response.status, body)
            response, body = self._exchange("PUT", f"{location}?digest={digest}")
            if response.status == 404:  # a PUT nginx repeated on the next replica after the first one finished it
                raise Refused("PUT 404 after a repeat")
            assert response.status == 201, (response.status, body)
        self.acknowledged.append(("blob", self.repository, digest, data))


@pytest.fixture
def three_replicas(tmp_path: Path, postgres, azurite):
    cluster = ReplicaSet(tmp_path / "cluster", postgres.new_database(), azurite.new_store(), azurite.environment())
    try:
        yield cluster
    finally:
        cluster.stop()


def _acknowledgements_grow(acknowledged: list, by: int, clients: list[Client], what: str) -> None:
    target = len(acknowledged) + by
    wait_until(lambda: _check_clients(clients) or len(acknowledged) >= target, timeout=90, what=what)


def _check_clients(clients: list[Client]) -> bool:
    for client in clients:
        if client.error is not None:
            raise client.error
    return False


def test_sigkill_of_random_replicas_during_pushes_and_pulls_loses_no_acknowledged_write(three_replicas, budget):
    cluster = three_replicas
    chooser = random.Random(18)
    acknowledged: list = []
    failures: Counter = Counter()
    clients = [Client(cluster.port, number, acknowledged, failures) for number in range(4)]
    for client in clients:
        client.start()
    kills = 0
    try:
        for _ in budget(4, 60):
            _acknowledgements_grow(acknowledged, chooser.randint(3, 15), clients, "pushes before the kill")
            victim = cluster.kill_random(chooser)
            kills += 1
            _acknowledgements_grow(acknowledged, 10, clients, f"pushes and pulls while {victim.host} is dead")
            victim.restart()
    finally:
        for client in clients:
            client.stopping.set()
        for client in clients:
            client.join(timeout=120)
    _check_clients(clients)

    checked = 0
    for replica, (kind, repository, reference, content) in itertools.product(cluster.replicas, acknowledged):
        section = "blobs" if kind == "blob" else "manifests"
        reply = request(f"{replica.url}/v2/{repository}/{section}/{reference}",
                        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=60)
        assert (reply.status, reply.body) == (200, content), f"{replica.host} lost {kind} {repository}@{reference}"
        checked += 1
    figures["replica kills: SIGKILLs"] += kills
    figures["replica kills: acknowledged writes checked on every replica"] += checked
    figures["replica kills: requests the clients had to repeat"] += sum(failures.values())
    figures["replica kills: losses"] += 0
    print(f"{kills} kills, {len(acknowledged)} acknowledged, failures the clients retried: {dict(failures)}")
    assert kills >= 1 and acknowledged
