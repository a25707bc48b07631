"""SIGKILL in the middle of monolithic and chunked pushes: every acknowledged write survives intact,
nothing half-written is ever served, and interrupted chunked uploads resume from what is on disk."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import threading
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.oci import image_manifest, sha256
from tests.support.processes import RegistryProcess, wait_until

ROUNDS = 5


def _connection(registry) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", registry.port, timeout=10)


def _request(connection, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    return response, response.read()


def _path(location: str) -> str:
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")


class Pusher(threading.Thread):
    """Pushes blobs (monolithic or chunked) and small images until the registry dies."""

    def __init__(self, registry, repository: str, seed: int, acknowledged: list, sessions: list,
                 headers: dict | None = None) -> None:
        super().__init__(daemon=True)
        self.registry, self.repository, self.headers = registry, repository, headers or {}
        self.random = random.Random(seed)
        self.acknowledged, self.sessions = acknowledged, sessions

    def run(self) -> None:
        try:
            connection = _connection(self.registry)
            while True:
                if self.random.random() < 0.5:
                    self._monolithic(connection)
                else:
                    self._chunked(connection)
        except (OSError, http.client.HTTPException):
            return  # the registry was killed

    def _blob(self) -> bytes:
        return os.urandom(self.random.choice([0, 1, 4096, 300_000, 2_500_000]))

    def _monolithic(self, connection) -> None:
        data = self._blob()
        digest = sha256(data)
        response, _ = _request(connection, "POST", f"/v2/{self.repository}/blobs/uploads/?digest={digest}", data,
                               self.headers)
        if response.status == 201:
            self.acknowledged.append(("blob", self.repository, digest, data))

    def _chunked(self, connection) -> None:
        data = self._blob() + os.urandom(1)
        digest = sha256(data)
        response, _ = _request(connection, "POST", f"/v2/{self.repository}/blobs/uploads/", None, self.headers)
        assert response.status == 202
        location = _path(response.getheader("Location"))
        chunk = max(len(data) // 3, 1)
        sent = 0
        while sent < len(data):
            piece = data[sent : sent + chunk]
            response, _ = _request(connection, "PATCH", location, piece,
                                   {**self.headers, "Content-Range": f"{sent}-{sent + len(piece) - 1}",
                                    "Content-Type": "application/octet-stream"})
            assert response.status == 202, response.status
            sent += len(piece)
            # The server acknowledged these bytes: a restart must resume from at least here.
            self.sessions.append((self.repository, location, sent, data))
        response, _ = _request(connection, "PUT", f"{location}&digest={digest}" if "?" in location else f"{location}?digest={digest}",
                               None, self.headers)
        if response.status == 201:
            self.acknowledged.append(("blob", self.repository, digest, data))
            config = json.dumps({"n": digest}).encode()
            response, _ = _request(connection, "POST", f"/v2/{self.repository}/blobs/uploads/?digest={sha256(config)}",
                                   config, self.headers)
            assert response.status == 201
            manifest = image_manifest(config, [data])
            tag = f"t{self.random.randrange(1_000_000)}"
            response, _ = _request(connection, "PUT", f"/v2/{self.repository}/manifests/{tag}", manifest,
                                   {**self.headers, "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
            if response.status == 201:
                self.acknowledged.append(("manifest", self.repository, tag, manifest))


def _check_every_served_blob_matches_its_digest(data_dir: Path) -> int:
    checked = 0
    for path in (data_dir / "blobs").rglob("*"):
        if path.is_file():
            algorithm = path.parent.parent.name
            assert hashlib.new(algorithm, path.read_bytes()).hexdigest() == path.name, f"corrupt blob file {path}"
            checked += 1
    return checked


def test_sigkill_during_pushes_loses_no_acknowledged_write(tmp_path: Path):
    data_dir = tmp_path / "data"
    acknowledged: list = []
    total_checked = 0
    for round_number in range(ROUNDS):
        registry = RegistryProcess(data_dir)
        sessions: list = []
        pushers = [Pusher(registry, f"crash/repo{n}", round_number * 10 + n, acknowledged, sessions) for n in range(3)]
        for pusher in pushers:
            pusher.start()
        # The kill lands after a random number of acknowledgements, with other pushes mid-transfer.
        target = len(acknowledged) + random.Random(round_number).randint(3, 20)
        wait_until(lambda: len(acknowledged) >= target, timeout=60, what="acknowledged pushes", interval=0.001)
        registry.kill()
        for pusher in pushers:
            pusher.join(timeout=30)

        registry = RegistryProcess(data_dir)
        try:
            connection = _connection(registry)
            for kind, repository, reference, content in acknowledged:
                section = "blobs" if kind == "blob" else "manifests"
                response, body = _request(connection, "GET", f"/v2/{repository}/{section}/{reference}")
                assert response.status == 200, f"acknowledged {kind} {repository}:{reference} lost"
                assert body == content, f"acknowledged {kind} {repository}:{reference} changed"
                total_checked += 1
            # Interrupted chunked uploads: the status tells what is on disk and the upload can finish.
            for repository, location, acknowledged_bytes, data in sessions[-3:]:
                response, _ = _request(connection, "GET", location)
                if response.status == 404:
                    continue  # that upload completed before the kill
                assert response.status == 204
                have = int(response.getheader("Range").split("-")[1]) + 1
                assert have >= acknowledged_bytes
                rest = data[have:]
                path = f"{location}&digest={sha256(data)}" if "?" in location else f"{location}?digest={sha256(data)}"
                response, _ = _request(connection, "PUT", path, rest,
                                       {"Content-Range": f"{have}-{len(data) - 1}"} if rest else {})
                assert response.status == 201, "a resumed upload must complete with the right digest"
        finally:
            registry.stop()
        total_checked += _check_every_served_blob_matches_its_digest(data_dir)
    assert total_checked > 20
