"""The hostile-input harness: a `serve` process in a sandbox, holding known content, and the check that a hostile
request changed nothing of it (property (c) of tests/api/test_hostile_input.py); and the hypothesis settings every
hostile-input suite shares.

`Target` pushes the known content (config, two layers, an OCI manifest under several tags, an index, a referrer, a
second repository, and two open upload sessions with known bytes), then `Target.example()` compares, after each
example, the catalog, every tags list, manifest, blob, the referrers and the sessions, every file under the data
directory and everything in the sandbox around it with what was there before, and repairs what changed through the
API so that later examples start clean.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support.oci import (DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST, OCI_CONFIG, OCI_EMPTY, OCI_INDEX,
                               OCI_LAYER, OCI_MANIFEST, descriptor, sha256)
from tests.support.processes import RegistryProcess
from tests.support.raw_client import RawResponse, Reply, call, location_path, path_part, raw_exchange

# Derandomized, without an example database: every run tries the same inputs.
FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)

SPEC_DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
UUID_NAME = re.compile(r"(?:tmp-)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

APP, OTHER, SCRATCH = "fuzz/app", "fuzz/other", "fuzz/scratch"
APP_TAGS = ("1.0", "A_tag", "latest", "v1", "z-last")  # all on the image; "multi" is the index


class SandboxedRegistry(RegistryProcess):
    """`serve` with its data directory, cwd, HOME and TMPDIR all inside one sandbox directory.

    The data directory sits four levels down, so a name or digest that climbs out of it with up to four
    `..` still lands inside the sandbox, which the invariant check watches."""

    def __init__(self, sandbox: Path) -> None:
        for part in ("cwd", "home", "tmp"):
            (sandbox / part).mkdir(parents=True, exist_ok=True)
        self.sandbox = sandbox
        data_dir = sandbox / "var" / "acr" / "volume" / "data"
        environment = {"HOME": str(sandbox / "home"), "TMPDIR": str(sandbox / "tmp"),
                       "XDG_DATA_HOME": str(sandbox / "home"), "ACR_REGISTRY_DATA_VOLUME": str(data_dir),
                       "ACR_REGISTRY_LOGIN_SERVER": ""}
        super().__init__(data_dir, env=environment, cwd=str(sandbox / "cwd"), metrics=False)


class Target:
    """The running registry, what was pushed into it, and the check that it is all still there."""

    def __init__(self, sandbox: Path) -> None:
        self.registry = SandboxedRegistry(sandbox)
        self.port = self.registry.port
        self.sandbox = sandbox
        self.data_dir = self.registry.data_dir
        self._probe: http.client.HTTPConnection | None = None
        self.poisoned: str | None = None
        self.allowed_new_files: set[str] = set()
        self._listings: dict[str, tuple[int, list[tuple[str, bool]]]] = {}
        self._hashes: dict[tuple, str] = {}

        rng = random.Random(20240601)
        self.blobs: dict[str, dict[str, bytes]] = {APP: {}, OTHER: {}}
        self.manifests: dict[str, dict[str, tuple[bytes, str]]] = {APP: {}, OTHER: {}}
        self.tags: dict[str, dict[str, str]] = {APP: {}, OTHER: {}}
        self._push_image(rng)
        self._push_index()
        self._push_referrer()
        self._push_other_repository(rng)

        # Two open upload sessions with known bytes; hostile requests must neither touch nor finish them.
        self.sessions: dict[str, tuple[str, bytes]] = {}
        for repository, content in ((SCRATCH, b"scratch session bytes 0123456789"), (OTHER, b"other session bytes")):
            self.sessions[repository] = (self.open_session(repository, content), content)

        self.baseline_api = self.api_state()
        self.baseline_files, problems = self.file_state()
        assert not problems, problems
        self.baseline_outside = self.outside_state()

    # --- the known content ----------------------------------------------------------------------------

    def _push_image(self, rng: random.Random) -> None:
        self.config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
        self.small_layer = b"x"
        self.big_layer = rng.randbytes(70_000)
        for blob in (self.config, self.small_layer, self.big_layer):
            self._push_blob(APP, blob)
        self.image_doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, self.config),
            "layers": [descriptor(OCI_LAYER, self.small_layer), descriptor(OCI_LAYER, self.big_layer)],
        }
        self.image_body = json.dumps(self.image_doc, indent=2).encode()
        self.image = sha256(self.image_body)
        for tag in APP_TAGS:
            self._push_manifest(APP, tag, self.image_body, OCI_MANIFEST)

    def _push_index(self) -> None:
        self.index_doc = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{**descriptor(OCI_MANIFEST, self.image_body),
                           "platform": {"architecture": "amd64", "os": "linux"}}],
        }
        self.index_body = json.dumps(self.index_doc).encode()
        self.index = sha256(self.index_body)
        self._push_manifest(APP, "multi", self.index_body, OCI_INDEX)

    def _push_referrer(self) -> None:
        self.empty, self.sbom = b"{}", b"hostile-input sbom v1\n"
        self._push_blob(APP, self.empty)
        self._push_blob(APP, self.sbom)
        self.referrer_doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sbom.v1",
            "config": descriptor(OCI_EMPTY, self.empty),
            "layers": [descriptor("text/plain", self.sbom)],
            "subject": descriptor(OCI_MANIFEST, self.image_body),
            "annotations": {"org.opencontainers.image.created": "2024-06-01T00:00:00Z"},
        }
        self.referrer_body = json.dumps(self.referrer_doc).encode()
        self.referrer = sha256(self.referrer_body)
        self._push_manifest(APP, self.referrer, self.referrer_body, OCI_MANIFEST)

    def _push_other_repository(self, rng: random.Random) -> None:
        other_config = json.dumps({"architecture": "arm64", "os": "linux"}).encode()
        other_layer = rng.randbytes(3000)
        for blob in (other_config, other_layer):
            self._push_blob(OTHER, blob)
        other_body = json.dumps({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": descriptor(DOCKER_CONFIG, other_config), "layers": [descriptor(DOCKER_LAYER, other_layer)],
        }).encode()
        self._push_manifest(OTHER, "o1", other_body, DOCKER_MANIFEST)

    # --- pushing ------------------------------------------------------------------------------------

    def _push_blob(self, repository: str, data: bytes) -> None:
        reply = call(self.port, "POST", f"/v2/{repository}/blobs/uploads/?digest={sha256(data)}", data,
                     {"Content-Type": "application/octet-stream"})
        assert reply.status == 201, reply.describe()
        self.blobs[repository][sha256(data)] = data

    def _push_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> None:
        reply = call(self.port, "PUT", f"/v2/{repository}/manifests/{reference}", body, {"Content-Type": media_type})
        assert reply.status == 201, reply.describe()
        self.manifests[repository][sha256(body)] = (body, media_type)
        if not SPEC_DIGEST.fullmatch(reference):
            self.tags[repository][reference] = sha256(body)

    def open_session(self, repository: str, content: bytes = b"") -> str:
        reply = call(self.port, "POST", f"/v2/{repository}/blobs/uploads/")
        assert reply.status == 202, reply.describe()
        path = location_path(reply)
        if content:
            reply = call(self.port, "PATCH", path, content, {"Content-Type": "application/octet-stream"})
            assert reply.status == 202, reply.describe()
        return path.rsplit("/", 1)[1]

    def session_path(self, repository: str, upload_id: str) -> str:
        return f"/v2/{repository}/blobs/uploads/{upload_id}"

    # --- observing --------------------------------------------------------------------------------------

    def get(self, target: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        """A well-formed read on a kept-alive connection (for the invariant check only)."""
        for attempt in (1, 2):
            try:
                if self._probe is None:
                    self._probe = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                self._probe.request(method, target)
                response = self._probe.getresponse()
                body = response.read()
                return response.status, {k.lower(): v for k, v in response.getheaders()}, body
            except (OSError, http.client.HTTPException):
                if self._probe is not None:
                    self._probe.close()
                self._probe = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get_many(self, targets: list[str]) -> list[RawResponse]:
        """Well-formed GETs pipelined on one connection (the invariant check runs after every example)."""
        request = b"".join(f"GET {target} HTTP/1.1\r\nHost: registry\r\n\r\n".encode() for target in targets)
        responses = raw_exchange(self.port, request, responses=len(targets), deadline=30)
        assert len(responses) == len(targets), f"{len(responses)} answers to {len(targets)} pipelined GETs"
        return responses

    def api_state(self) -> dict[tuple, object]:
        keys: list[tuple] = [("catalog",)]
        targets = ["/v2/_catalog"]
        for repository in (APP, OTHER, SCRATCH):
            keys.append(("tags", repository))
            targets.append(f"/v2/{repository}/tags/list")
        for repository, manifests in self.manifests.items():
            for reference in list(manifests) + list(self.tags[repository]):
                keys.append(("manifest", repository, reference))
                targets.append(f"/v2/{repository}/manifests/{reference}")
        for repository, blobs in self.blobs.items():
            for digest in blobs:
                keys.append(("blob", repository, digest))
                targets.append(f"/v2/{repository}/blobs/{digest}")
        keys.append(("referrers", APP, self.image))
        targets.append(f"/v2/{APP}/referrers/{self.image}")
        for repository, (upload_id, _content) in self.sessions.items():
            keys.append(("session", repository))
            targets.append(self.session_path(repository, upload_id))
        state: dict[tuple, object] = {}
        for key, response in zip(keys, self.get_many(targets)):
            headers = response.headers
            if key[0] in ("catalog", "tags", "referrers"):
                state[key] = (response.status, response.body if response.status == 200 else None)
            elif key[0] == "manifest":
                state[key] = (response.status, headers.get("docker-content-digest"), headers.get("content-type"),
                              sha256(response.body))
            elif key[0] == "blob":
                state[key] = (response.status, sha256(response.body), headers.get("docker-content-digest"))
            else:
                state[key] = (response.status, headers.get("range"))
        return state

    def _entries(self, folder: str) -> list[tuple[str, bool]]:
        """(name, is a folder) for one folder; listings of folders unchanged for over a second are cached
        (a folder's mtime moves whenever an entry is added or removed; the second covers coarse clocks)."""
        mtime = os.stat(folder).st_mtime_ns
        cached = self._listings.get(folder)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        entries = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in os.scandir(folder)]
        if mtime < time.time_ns() - 1_000_000_000:
            self._listings[folder] = (mtime, entries)
        return entries

    def _blob_hash(self, path: str, algorithm: str) -> str:
        status = os.stat(path)
        key = (path, status.st_size, status.st_mtime_ns, status.st_ino)
        if key not in self._hashes:
            with open(path, "rb") as file:
                self._hashes[key] = hashlib.new(algorithm, file.read()).hexdigest()
        return self._hashes[key]

    def file_state(self) -> tuple[dict[str, str], list[str]]:
        """Every file and folder under the data directory (blob files hashed), and layout violations."""
        listing: dict[str, str] = {}
        problems: list[str] = []
        root = str(self.data_dir)
        cut = len(root) + 1
        pending = [root]
        while pending:
            folder = pending.pop()
            for name, is_folder in self._entries(folder):
                full = f"{folder}/{name}"
                path = full[cut:]
                if is_folder:
                    listing[path] = "dir"
                    pending.append(full)
                    continue
                parts = path.split("/")
                if parts[0] == "uploads":
                    if len(parts) != 2 or not UUID_NAME.fullmatch(parts[1]):
                        problems.append(f"unexpected file in uploads/: {path!r}")
                elif len(parts) == 1 and name.startswith("metadata.db"):
                    continue
                elif parts[0] == "blobs":
                    expected = (len(parts) == 4 and parts[1] in ("sha256", "sha512")
                                and re.fullmatch(r"[0-9a-f]{%d}" % (64 if parts[1] == "sha256" else 128), parts[3])
                                and parts[3][:2] == parts[2])
                    if not expected:
                        problems.append(f"unexpected file in blobs/: {path!r}")
                        continue
                    listing[path] = self._blob_hash(full, parts[1])
                    if listing[path] != parts[3]:
                        problems.append(f"blob file {path} does not hold the content its name says")
                else:
                    listing[path] = "file"
        return listing, problems

    def outside_state(self) -> set[str]:
        """Everything in the sandbox except the data directory's contents."""
        found = set()
        data = str(self.data_dir)
        for folder, folders, files in os.walk(self.sandbox):
            folders[:] = [name for name in folders if os.path.join(folder, name) != data]
            relative = os.path.relpath(folder, self.sandbox)
            for name in folders + files:
                found.add(os.path.normpath(os.path.join(relative, name)))
        return found

    def problems(self, absent_manifests=(), absent_blobs=(), absent_files=()) -> list[str]:
        problems: list[str] = []
        if self.registry.process.poll() is not None:
            return [f"the registry process exited with {self.registry.process.returncode}:\n"
                    + self.registry.log()[-3000:]]
        current = self.api_state()
        for key, before in self.baseline_api.items():
            after = current.get(key)
            if after != before:
                problems.append(f"{key}: was {str(before)[:300]}, now {str(after)[:300]}")
        for repository, digest in absent_manifests:
            status, headers, _ = self.get(f"/v2/{repository}/manifests/{digest}", "HEAD")
            if status != 404:
                problems.append(f"manifest {repository}@{digest} exists (HEAD -> {status})")
        for repository, digest in absent_blobs:
            status, _, _ = self.get(f"/v2/{repository}/blobs/{digest}", "HEAD")
            if status != 404:
                problems.append(f"blob {digest} is in {repository} (HEAD -> {status})")
        files, layout = self.file_state()
        problems += layout
        for path, value in self.baseline_files.items():
            if files.get(path) != value:
                problems.append(f"data/{path} changed or vanished")
        for path in files.keys() - self.baseline_files.keys():
            digest_hex = path.rsplit("/", 1)[-1]
            if digest_hex in self.allowed_new_files:
                continue
            if any(d.split(":")[1] == digest_hex for d in absent_files):
                problems.append(f"data/{path} was written for content that must not be stored")
            else:
                problems.append(f"new entry in the data directory: {path!r}")
        outside = self.outside_state()
        if outside != self.baseline_outside:
            problems.append(f"entries appeared outside the data directory: {sorted(outside - self.baseline_outside)}"
                            f" / vanished: {sorted(self.baseline_outside - outside)}")
        return problems

    def restore(self, absent_manifests=(), absent_blobs=()) -> None:
        """Undo what a failing example stored, through the API, so the next example starts clean."""
        for repository, digest in absent_manifests:
            call(self.port, "DELETE", f"/v2/{repository}/manifests/{digest}")
        for repository, digest in absent_blobs:
            call(self.port, "DELETE", f"/v2/{repository}/blobs/{digest}")
        for repository, tags in self.tags.items():
            status, _, body = self.get(f"/v2/{repository}/tags/list")
            current = set(json.loads(body).get("tags") or []) if status == 200 else set()
            for extra in current - set(tags):
                call(self.port, "DELETE", f"/v2/{repository}/manifests/{path_part(extra)}")
            for tag, digest in tags.items():
                _, headers, _ = self.get(f"/v2/{repository}/manifests/{tag}")
                if headers.get("docker-content-digest") != digest:
                    body, media_type = self.manifests[repository][digest]
                    call(self.port, "PUT", f"/v2/{repository}/manifests/{tag}", body, {"Content-Type": media_type})
        for repository, (upload_id, content) in list(self.sessions.items()):
            if self.api_state().get(("session", repository)) != self.baseline_api[("session", repository)]:
                self.sessions[repository] = (self.open_session(repository, content), content)
                self.baseline_api[("session", repository)] = self.api_state()[("session", repository)]
        files, _ = self.file_state()
        for path in files.keys() - self.baseline_files.keys():
            if path.startswith("blobs/"):
                self.allowed_new_files.add(path.rsplit("/", 1)[-1])

    @contextmanager
    def example(self):
        """Run one example; afterwards the stored data must be exactly as before (property (c))."""
        if self.poisoned:
            pytest.fail(f"an earlier example changed the stored data and it could not be restored: {self.poisoned}")
        guard = Guard()
        failure: BaseException | None = None
        try:
            yield guard
        except BaseException as error:  # noqa: BLE001 - re-raised below, after the data check
            failure = error
        problems = self.problems(guard.absent_manifests, guard.absent_blobs, guard.absent_files)
        if problems:
            self.restore(guard.absent_manifests, guard.absent_blobs)
            left = self.problems(guard.absent_manifests, guard.absent_blobs)
            if left:
                self.poisoned = "; ".join(left)[:2000]
        if failure is not None:
            if problems:
                failure.add_note("stored data changed too:\n  " + "\n  ".join(problems))
            raise failure
        assert not problems, "stored data changed:\n  " + "\n  ".join(problems) + "\n" + "\n".join(guard.log)

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
        self.registry.stop()


@dataclass
class Guard:
    """What one example must not leave behind (`must_not_store`), and what it sent (shown when it fails)."""

    absent_manifests: list[tuple[str, str]] = field(default_factory=list)
    absent_blobs: list[tuple[str, str]] = field(default_factory=list)
    absent_files: list[str] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def must_not_store(self, repository: str, data: bytes, *, manifest: bool = False) -> None:
        digest = sha256(data)
        (self.absent_manifests if manifest else self.absent_blobs).append((repository, digest))
        self.absent_files.append(digest)

    def sent(self, reply: Reply) -> Reply:
        self.log.append(reply.describe())
        return reply

