"""Pushes that race a SIGKILL: threads that push blobs (monolithic and chunked) and small images until the registry
dies, recording what it acknowledged; and the check that every blob file left on disk holds what its name says."""

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


def connect(registry) -> http.client.HTTPConnection:
    # A killed registry resets or refuses at once; a timeout only ever means a slow machine, which the pushers must
    # outlast rather than take for the kill (a shared 2-core host under load has taken over 10 s for one request).
    return http.client.HTTPConnection("127.0.0.1", registry.port, timeout=60)


def exchange(connection, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
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
            connection = connect(self.registry)
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
        response, _ = exchange(connection, "POST", f"/v2/{self.repository}/blobs/uploads/?digest={digest}", data,
                               self.headers)
        if response.status == 201:
            self.acknowledged.append(("blob", self.repository, digest, data))

    def _chunked(self, connection) -> None:
        data = self._blob() + os.urandom(1)
        digest = sha256(data)
        response, _ = exchange(connection, "POST", f"/v2/{self.repository}/blobs/uploads/", None, self.headers)
        assert response.status == 202
        location = _path(response.getheader("Location"))
        chunk = max(len(data) // 3, 1)
        sent = 0
        while sent < len(data):
            piece = data[sent : sent + chunk]
            response, _ = exchange(connection, "PATCH", location, piece,
                                   {**self.headers, "Content-Range": f"{sent}-{sent + len(piece) - 1}",
                                    "Content-Type": "application/octet-stream"})
            assert response.status == 202, response.status
            sent += len(piece)
            # The server acknowledged these bytes: a restart must resume from at least here.
            self.sessions.append((self.repository, location, sent, data))
        response, _ = exchange(connection, "PUT", f"{location}&digest={digest}" if "?" in location else f"{location}?digest={digest}",
                               None, self.headers)
        if response.status == 201:
            self.acknowledged.append(("blob", self.repository, digest, data))
            config = json.dumps({"n": digest}).encode()
            response, _ = exchange(connection, "POST", f"/v2/{self.repository}/blobs/uploads/?digest={sha256(config)}",
                                   config, self.headers)
            assert response.status == 201
            manifest = image_manifest(config, [data])
            tag = f"t{self.random.randrange(1_000_000)}"
            response, _ = exchange(connection, "PUT", f"/v2/{self.repository}/manifests/{tag}", manifest,
                                   {**self.headers, "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
            if response.status == 201:
                self.acknowledged.append(("manifest", self.repository, tag, manifest))


def check_every_blob_file_matches_its_digest(data_dir: Path) -> int:
    """Every file under blobs/ holds what its name says; returns how many were checked."""
    checked = 0
    for path in (data_dir / "blobs").rglob("*"):
        if path.is_file():
            algorithm = path.parent.parent.name
            assert hashlib.new(algorithm, path.read_bytes()).hexdigest() == path.name, f"corrupt blob file {path}"
            checked += 1
    return checked
